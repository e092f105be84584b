from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "smtpapi_milter._native.tokenmint",
            ["milter/smtpapi_milter/_native/tokenmint.c"],
            libraries=["crypto", "z"],
            extra_compile_args=["-Wall", "-Wextra", "-O2"],
        ),
        Extension(
            "smtpapi_milter._native.qpsplice",
            ["milter/smtpapi_milter/_native/qpsplice.c"],
            extra_compile_args=["-Wall", "-Wextra", "-O2"],
        ),
        Extension(
            "smtpapi_milter._native.textrun",
            ["milter/smtpapi_milter/_native/textrun.c"],
            extra_compile_args=["-Wall", "-Wextra", "-O2"],
        ),
        Extension(
            "smtpapi_milter._native.maillogline",
            ["milter/smtpapi_milter/_native/maillogline.c"],
            extra_compile_args=["-Wall", "-Wextra", "-O2"],
        ),
        Extension(
            "smtpapi_milter._native.jsonnum",
            ["milter/smtpapi_milter/_native/jsonnum.c"],
            extra_compile_args=["-Wall", "-Wextra", "-O2"],
        ),
    ]
)
