"""Build of the one C extension, guardrails_uq.provenance._sais (SA-IS suffix arrays of token ids).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the package still
installs and index building falls back to pydivsufsort (slower, ~5x the peak memory).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "guardrails_uq.provenance._sais",
            sources=["guardrails_uq/provenance/_sais.c"],
            extra_compile_args=["-O3", "-DNDEBUG"],
            optional=True,
        )
    ]
)
