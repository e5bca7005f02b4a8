"""Card numbers: Luhn, written and spoken forms, and the digit runs that are left alone."""

from __future__ import annotations

import pytest

from voxpipe.processors.policy.cards import (
    ends_with_digits,
    find_card_numbers,
    luhn_valid,
    redact_card_numbers,
    redact_continued_card,
    trailing_run,
)

VISA = "4111111111111111"
AMEX = "378282246310005"


def test_luhn() -> None:
    assert luhn_valid(VISA) and luhn_valid(AMEX) and luhn_valid("5555555555554444")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("") and not luhn_valid("4111-1111")


@pytest.mark.parametrize(
    "said",
    [
        "my card is 4111 1111 1111 1111 thanks",
        "my card is 4111-1111-1111-1111 thanks",
        "my card is 4111111111111111 thanks",
        "my card is four one one one one one one one one one one one one one one one thanks",
        "my card is four one one one, one one one one, one one one one, one one one one thanks",
        "my card is Four Triple one, one one one one, double one double one, 1111 thanks",
    ],
)
def test_a_visa_number_written_or_spoken_is_redacted(said: str) -> None:
    assert [m.digits for m in find_card_numbers(said)] == [VISA]
    assert redact_card_numbers(said) == ("my card is [card number] thanks", 1)


def test_oh_for_zero_and_double_digits() -> None:
    # 3782 822463 10005 read as "three seven eight two, eight double two four six three, one
    # oh oh oh five".
    said = "three seven eight two eight double two four six three one oh oh oh five"
    assert [m.digits for m in find_card_numbers(said)] == [AMEX]
    five = "five five five five five five five five five five five five four four four four"
    assert [m.digits for m in find_card_numbers(five)] == ["5555555555554444"]


def test_a_card_followed_by_its_expiry_and_code_in_one_breath() -> None:
    text, n = redact_card_numbers("it's 4111 1111 1111 1111 12 27 123 okay")
    assert (text, n) == ("it's [card number] 12 27 123 okay", 1)


@pytest.mark.parametrize(
    "said",
    [
        "call me back on +44 7700 900123",  # a phone number: 12 digits
        "my number is 0 1 6 1 4 9 6 0 0 0 0",
        "the order number is 1234 5678 9012 3456",  # 16 digits failing Luhn
        "order one two three four five six seven eight nine oh one two three four five six",
        "4111 1111 1111 1112",  # one digit off: not a valid card number
        "oh someone said one thing",
        "I'm thirty four and live at 22 Baker Street",
    ],
)
def test_other_digit_runs_are_left_alone(said: str) -> None:
    assert find_card_numbers(said) == []
    assert redact_card_numbers(said) == (said, 0)


def test_two_cards_in_one_text() -> None:
    text, n = redact_card_numbers(f"first {VISA} then {AMEX}", "<PAN>")
    assert (text, n) == ("first <PAN> then <PAN>", 2)


def test_ends_with_digits() -> None:
    assert ends_with_digits("my card is four one one one")
    assert ends_with_digits("4111 1111,")
    assert not ends_with_digits("one more thing")
    assert not ends_with_digits("")


def test_the_rest_of_a_card_begun_in_an_earlier_transcript_is_redacted() -> None:
    assert trailing_run("my card is 4111 1111") == "4111 1111"
    assert trailing_run("four one one one.") == "four one one one."
    assert trailing_run("4111 thanks") == ""
    before = trailing_run("my card is four one one one one one one one")
    assert redact_continued_card(before, "one one one one 1111 thanks") == (
        "[card number] thanks",
        1,
    )
    # Nothing to continue, or no card across the two: untouched.
    assert redact_continued_card("", "1111 1111") == ("1111 1111", 0)
    assert redact_continued_card("1234", "5678 please") == ("5678 please", 0)
    assert redact_continued_card(before, "and 1111 1111") == ("and 1111 1111", 0)
