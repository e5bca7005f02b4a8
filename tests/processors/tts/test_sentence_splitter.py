"""SentenceSplitter: sentences out as soon as their end is seen, not before."""

from __future__ import annotations

from voxpipe.processors.tts.sentences import SentenceSplitter


def split_stream(fragments: list[str]) -> list[str]:
    s = SentenceSplitter()
    out: list[str] = []
    for fragment in fragments:
        out += s.push(fragment)
    rest = s.flush()
    return out + ([rest] if rest else [])


def test_token_stream_is_cut_at_sentence_ends() -> None:
    tokens = ["Hello", " there", ".", " How", " are", " you", "?", " I'm", " fine", "!"]
    assert split_stream(tokens) == ["Hello there.", "How are you?", "I'm fine!"]


def test_a_sentence_is_released_by_the_fragment_that_ends_it() -> None:
    s = SentenceSplitter()
    assert s.push("Sure") == []
    assert s.push(".") == ["Sure."]  # not held for the next token's whitespace
    assert s.push(" Why") == []
    assert s.push("?") == ["Why?"]
    assert s.pending == ""


def test_a_full_stop_after_a_digit_or_abbreviation_waits_for_whitespace() -> None:
    s = SentenceSplitter()
    assert s.push("It is 3.") == []  # could be "3.5"
    assert s.push("5 dollars.") == ["It is 3.5 dollars."]
    assert s.push(" Ask Dr.") == []
    assert s.push(" Smith") == []
    assert s.flush() == "Ask Dr. Smith"


def test_not_eager_waits_for_the_next_word() -> None:
    s = SentenceSplitter(eager=False)
    assert s.push("Sure.") == []  # could still be "Sure.com": wait for whitespace
    assert s.push(" Your") == ["Sure."]
    assert s.pending == " Your"


def test_numbers_abbreviations_and_initials_do_not_end_sentences() -> None:
    text = "Dr. Smith paid 3.50 dollars, e.g. for J. Doe. Then he left. I did too. Okay"
    assert split_stream([text]) == [
        "Dr. Smith paid 3.50 dollars, e.g. for J. Doe.",
        "Then he left.",
        "I did too.",
        "Okay",
    ]


def test_quotes_newlines_and_ellipses() -> None:
    assert split_stream(['He said "stop." Then', " nothing... Really?\nYes"]) == [
        'He said "stop."',
        "Then nothing...",
        "Really?",
        "Yes",
    ]


def test_long_run_on_text_is_cut_at_a_comma_or_space() -> None:
    s = SentenceSplitter(max_chars=40)
    out = s.push("one two three four five six seven, eight nine ten eleven twelve thirteen")
    assert out and all(len(piece) <= 40 for piece in out)
    assert " ".join(out + [s.flush()]).split() == (
        "one two three four five six seven, eight nine ten eleven twelve thirteen".split()
    )


def test_flush_and_reset() -> None:
    s = SentenceSplitter()
    s.push("unfinished thought")
    assert s.flush() == "unfinished thought"
    assert s.flush() == ""
    s.push("drop me")
    s.reset()
    assert s.pending == ""
