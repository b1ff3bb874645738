"""Signed checkpoints of the Merkle log: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519 keys.

Formats (all spelled out in docs/AUDITOR.md, so a verifier needs no code of ours):

* checkpoint body: ``<origin>\\n<tree size, decimal>\\n<root hash, standard base64>\\n`` (c2sp.org/tlog-checkpoint);
* signed note: ``<body>\\n`` followed by one line per signature, ``\\u2014 <key name> <base64(key id || signature)>\\n``
  where key id = first 4 bytes of SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key) and the
  signature is Ed25519 over the body bytes (c2sp.org/signed-note);
* verifier key: ``<name>+<key id, 8 hex>+<base64(0x01 || public key)>``; signer key (kept secret):
  ``PRIVATE+KEY+<name>+<key id, 8 hex>+<base64(0x01 || 32-byte seed)>`` (the Go sumdb/note encodings).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # em dash + space starts every signature line
MAX_NOTE_BYTES = 1 << 20
_NAME = re.compile(r"[^\s+]+")  # a key name has no spaces and no plus signs (c2sp.org/signed-note)


class NoteError(ValueError):
    """A key, note or checkpoint is malformed or its signature does not verify; the message says which."""


@dataclass(frozen=True)
class Checkpoint:
    """One tree head: the log's origin line, its size and its root hash."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise NoteError(f"key name {name!r} must be non-empty with no spaces or '+'")


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 signing key."""

    name: str
    seed: bytes

    @property
    def public_key(self) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, body: str) -> str:
        """The signed note: body, blank line, one signature line."""
        sig = Ed25519PrivateKey.from_private_bytes(self.seed).sign(body.encode())
        line = base64.b64encode(key_id(self.name, self.public_key) + sig).decode()
        return f"{body}\n{SIG_PREFIX}{self.name} {line}\n"

    def verifier_key(self) -> str:
        return format_verifier_key(self.name, self.public_key)

    def encode(self) -> str:
        kid = key_id(self.name, self.public_key).hex()
        return f"PRIVATE+KEY+{self.name}+{kid}+{base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()}"


def generate_signer(name: str) -> Signer:
    _check_name(name)
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return Signer(name, seed)


def _key_fields(name: str, kid: str, blob_text: str, what: str) -> tuple[str, bytes]:
    """Check a key's name and algorithm byte; returns (name, the 32 key bytes). The key id is checked by the caller."""
    _check_name(name)
    blob = _b64(blob_text, what)
    if len(blob) != 33 or blob[0] != ALG_ED25519:
        raise NoteError(f"{what}: only Ed25519 (algorithm 1, 32 key bytes) is supported")
    return name, blob[1:]


def _check_key_id(name: str, public_key: bytes, kid: str, what: str) -> None:
    if key_id(name, public_key).hex() != kid.lower():
        raise NoteError(f"{what}: the key id does not match the key")


def parse_signer(text: str) -> Signer:
    parts = text.strip().split("+", 4)  # base64 may hold '+': split only the fields before it
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("a signer key reads PRIVATE+KEY+<name>+<key id>+<base64 key>")
    signer = Signer(*_key_fields(parts[2], parts[3], parts[4], "signer key"))
    _check_key_id(signer.name, signer.public_key, parts[3], "signer key")
    return signer


def format_verifier_key(name: str, public_key: bytes) -> str:
    return f"{name}+{key_id(name, public_key).hex()}+{base64.b64encode(bytes([ALG_ED25519]) + public_key).decode()}"


@dataclass(frozen=True)
class Verifier:
    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)


def parse_verifier(text: str) -> Verifier:
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("a verifier key reads <name>+<key id, 8 hex>+<base64(0x01 || public key)>")
    v = Verifier(*_key_fields(parts[0], parts[1], parts[2], "verifier key"))
    _check_key_id(v.name, v.public_key, parts[1], "verifier key")
    return v


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what}: invalid base64") from None


def parse_checkpoint(body: str) -> Checkpoint:
    """A checkpoint body (origin, size, root; extension lines are allowed and ignored)."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has at least three lines, each ending in a newline")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin:
        raise NoteError("checkpoint: empty origin line")
    if not re.fullmatch(r"0|[1-9][0-9]{0,19}", size_text) or int(size_text) >= 1 << 63:
        raise NoteError(f"checkpoint: tree size {size_text[:40]!r} is not a decimal below 2^63")
    root = _b64(root_text, "checkpoint root")
    if len(root) != 32:
        raise NoteError("checkpoint: the root hash must be 32 bytes")
    return Checkpoint(origin, int(size_text), root)


def open_note(note: str, verifier: Verifier) -> Checkpoint:
    """Verify a signed checkpoint note with the verifier key; return the checkpoint it signs.

    Signature lines by other keys are allowed (a witness may co-sign); one by this key must verify.
    """
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise NoteError("note is larger than 1 MiB")
    if "\r" in note:
        raise NoteError("a note has no carriage returns")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("a signed note is the text, a blank line and signature lines, each ending in a newline")
    body, sig_block = note[: split + 1], note[split + 2:]
    found = False
    for line in sig_block.split("\n")[:-1]:
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"malformed signature line {line[:60]!r}")
        fields = line[len(SIG_PREFIX):].split(" ")
        if len(fields) != 2:
            raise NoteError(f"malformed signature line {line[:60]!r}")
        name, blob = fields[0], _b64(fields[1], "signature")
        if name != verifier.name or len(blob) < 4 or blob[:4] != verifier.key_id:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public_key).verify(blob[4:], body.encode())
        except (InvalidSignature, ValueError):
            raise NoteError(f"the signature by {name} does not verify: the note was altered or signed by another key") from None
        found = True
    if not found:
        raise NoteError(f"the note carries no signature by {verifier.name}+{verifier.key_id.hex()}")
    return parse_checkpoint(body)
