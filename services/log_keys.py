"""The checkpoint signing key on disk: made at first use (mode 0600), its verifier key written beside it."""

from __future__ import annotations

import os
from pathlib import Path

from services.checkpoint_note import (
    NoteError,
    Signer,
    Verifier,
    generate_signer,
    parse_signer,
    parse_verifier,
)


def verifier_path(key_file: Path) -> Path:
    return key_file.with_suffix(".pub")


def load_signer(key_file: Path, name: str, *, create: bool = True) -> Signer:
    """The signer in key_file; made (atomically, 0600, never overwritten) if missing and create is set."""
    if not key_file.exists():
        if not create:
            raise NoteError(f"no signing key at {key_file}: `stockledger log keygen` makes one")
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = generate_signer(name)
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another worker made it first: use theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(signer.encode() + "\n")
                f.flush()
                os.fsync(f.fileno())
    try:
        signer = parse_signer(key_file.read_text())
    except OSError as exc:
        raise NoteError(f"cannot read the signing key {key_file}: {exc.strerror}") from None
    if key_file.stat().st_mode & 0o077:
        raise NoteError(f"the signing key {key_file} is readable by others: chmod 600 it")
    pub = verifier_path(key_file)
    if not pub.exists() or pub.read_text().strip() != signer.verifier_key():
        pub.write_text(signer.verifier_key() + "\n")
    return signer


def load_verifier(text_or_path: str) -> Verifier:
    """A verifier key given inline (<name>+<id>+<key>) or as a file holding one."""
    path = Path(text_or_path)
    if "+" not in text_or_path or path.is_file():
        try:
            text_or_path = path.read_text()
        except OSError as exc:
            raise NoteError(f"cannot read the verifier key {path}: {exc.strerror}") from None
    return parse_verifier(text_or_path)
