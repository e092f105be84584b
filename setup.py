"""Only the C extensions (metadata is in pyproject.toml): milter/smtpapi_milter/_native/.

Each module speeds up one measured hot spot; its Python reference sits beside the caller and
is tested against it (SMTPAPI_PURE_PYTHON=1 runs the references).
"""

from setuptools import Extension, setup

# module -> the libraries it links (OpenSSL's libcrypto for the token minter and opener, zlib
# for the opener's inflate)
MODULES = {
    "tokenmint": ["crypto", "z"],
    "qpsplice": [],
    "textrun": [],
    "maillogline": [],
    "jsonnum": [],
}

setup(
    ext_modules=[
        Extension(
            f"smtpapi_milter._native.{name}",
            [f"milter/smtpapi_milter/_native/{name}.c"],
            libraries=libraries,
            extra_compile_args=["-Wall", "-Wextra", "-O2"],
        )
        for name, libraries in MODULES.items()
    ]
)
