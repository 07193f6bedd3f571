"""`RandomIds`: ``<prefix><16 hex digits>``, independent ids, whatever the prefix holds."""

from __future__ import annotations

import pytest

from voicebus.wire.ids import RandomIds


@pytest.mark.parametrize("prefix", ["3f2a9c-", "", "replay-a b\n-", "\n\x00\x01,;-"])
def test_ids_have_the_prefix_and_16_hex_digits_and_never_repeat(prefix: str) -> None:
    ids = RandomIds(prefix)
    made = [ids() for _ in range(3000)] + [ids.next() for _ in range(100)]  # batches of 512
    assert len(set(made)) == len(made)
    for one in made:
        assert one.startswith(prefix) and len(one) == len(prefix) + 16
        digits = one[len(prefix) :]
        assert digits == digits.lower() and int(digits, 16) >= 0


def test_two_sources_with_one_prefix_share_no_id() -> None:
    first, second = RandomIds("same-"), RandomIds("same-")
    assert not {first() for _ in range(1000)} & {second() for _ in range(1000)}


def test_a_prefix_holding_every_ascii_character_is_refused() -> None:
    with pytest.raises(ValueError, match="every ASCII character"):
        RandomIds("".join(map(chr, range(128))))
