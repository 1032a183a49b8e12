"""Exports on the Hugging Face Hub: load by repository id, push a folder. Needs `huggingface_hub`
(`pip install "armkit[hub]"`) and network; local folders never touch either.

Only the folder's files travel; loading a downloaded folder is the same `from_pretrained` as for a local one, so it
never unpickles and never imports a class the caller did not trust.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_repo_id(name: str | Path) -> bool:
    """'org/name' that is not an existing local path."""
    text = str(name)
    return bool(REPO_ID.match(text)) and not Path(text).expanduser().exists()


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError("loading or pushing by hub id needs huggingface_hub: pip install 'armkit[hub]'") from None
    return huggingface_hub


def download(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The repository's files in the local Hugging Face cache (downloaded once; offline mode reads the cache)."""
    return Path(_hub().snapshot_download(repo_id=repo_id, revision=revision, cache_dir=cache_dir))


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = True, token: str | None = None,
                commit_message: str = "Upload armkit tokenizer") -> str:
    """Upload an export folder (config.json, safetensors, README.md, optional programs) to `repo_id`; returns the
    commit URL. The repository is created if missing (private by default)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: export the tokenizer first (`armkit export`)")
    api = _hub().HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
