"""What the CLI prints of untrusted text (command lines) cannot drive the terminal."""

from __future__ import annotations

import io

from overseer.cli.output import Output, printable


def test_escape_sequences_are_shown_not_sent():
    evil = "sleep 1 \x1b]0;owned\x07\x1b[2J\rFAKE: all good \x9b31m"
    stream = io.StringIO()
    Output(stream=stream).line(f"PID 5000  {evil}")
    written = stream.getvalue()
    assert "\x1b" not in written
    assert "\x07" not in written
    assert "\r" not in written
    assert "\x9b" not in written
    assert "\\x1b]0;owned\\x07" in written


def test_ordinary_text_is_untouched():
    text = "tail -f /var/log/app.log\t[bracketed] über ✓"
    assert printable(text) == text
