# Sourced by the other scripts: where the project's caches live (outside the clone, reused by CI).
MTT_CACHE="${MTT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moshi-ttt}"
MTT_TORCH_VENV="$MTT_CACHE/torch-venv"       # LibTorch from the PyPI torch wheel
MTT_REF_VENV="$MTT_CACHE/moshi-ref-venv"     # the PyPI moshi package: test reference only
MTT_TORCH_VERSION="${MTT_TORCH_VERSION:-2.7.1}"  # satisfies moshi's pin (torch<2.10), so pip's cache serves both venvs
MTT_BUILD="${MTT_BUILD:-build}"
MTT_JOBS="${MTT_JOBS:-$(nproc)}"
