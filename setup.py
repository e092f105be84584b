from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "smtpapi_milter._native.journal_writer",
            ["milter/smtpapi_milter/_native/journal_writer.c"],
            extra_compile_args=["-Wall", "-Wextra"],
        )
    ]
)
