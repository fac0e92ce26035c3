"""Channel tokens: which frames a channel end accepts.

A ZeroMQ PULL or ROUTER socket cannot tell who sent a message (the peer address is an
IP; every node on one host shares it), so a data frame proves where it comes from by
the token in its header. The coordinator makes a random secret for every job attempt
and sends it in the deploy message to every node of the attempt; each channel end
derives, once, the tokens of its channel from it:

* ``DATA`` direction: producer → consumer frames (data and events);
* ``CREDIT`` direction: consumer → producer credits and end-of-partition acks.

A token is an HMAC of the job, attempt, channel and direction under the secret,
truncated to 16 bytes, so a token seen on one channel (or attempt, or direction) is
worth nothing on another. Checking one costs a 16-byte constant-time compare per frame.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from mesh.transport.frames import TOKEN_SIZE

__all__ = ["CREDIT", "DATA", "channel_token", "new_secret", "token_matches"]

#: The direction of the frames a token is for.
DATA = "data"
CREDIT = "credit"

_SECRET_SIZE = 16


def new_secret() -> bytes:
    """A fresh random secret for one job attempt."""
    return secrets.token_bytes(_SECRET_SIZE)


def channel_token(secret: bytes, job: str, attempt: int, channel: int, direction: str) -> bytes:
    """The token frames of ``channel`` carry in ``direction`` (DATA or CREDIT)."""
    message = f"{job}/{attempt}/{channel}/{direction}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()[:TOKEN_SIZE]


def token_matches(received: bytes, expected: bytes) -> bool:
    """Whether a frame's token is the expected one (in constant time)."""
    return hmac.compare_digest(received, expected)
