"""Channel tokens (mesh/transport/tokens.py)."""

from __future__ import annotations

from mesh.transport.frames import NO_TOKEN, TOKEN_SIZE
from mesh.transport.tokens import CREDIT, DATA, channel_token, new_secret, token_matches


def test_a_token_is_16_bytes_and_the_same_for_both_ends() -> None:
    secret = new_secret()
    token = channel_token(secret, "job", 3, 7, DATA)
    assert len(token) == TOKEN_SIZE
    assert token_matches(channel_token(secret, "job", 3, 7, DATA), token)


def test_a_token_is_worth_nothing_on_another_channel_attempt_direction_or_secret() -> None:
    secret = new_secret()
    token = channel_token(secret, "job", 3, 7, DATA)
    others = [
        channel_token(secret, "job", 3, 8, DATA),
        channel_token(secret, "job", 4, 7, DATA),
        channel_token(secret, "other", 3, 7, DATA),
        channel_token(secret, "job", 3, 7, CREDIT),
        channel_token(new_secret(), "job", 3, 7, DATA),
        NO_TOKEN,
    ]
    assert not any(token_matches(other, token) for other in others)


def test_secrets_are_random() -> None:
    assert len({new_secret() for _ in range(100)}) == 100
