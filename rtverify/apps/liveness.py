"""A spoken-digits challenge (``verify --challenge``): a weak, honest defence against replay.

rtverify prints a fresh random sequence of digits; the speaker must say them. The recording must
then both sound like the enrolled voice *and* contain those digits, so a recording of the person
saying something else (a passphrase captured earlier, a voicemail) is refused.

The digits are checked with PocketSphinx (the optional ``liveness`` extra: ``pocketsphinx`` from
PyPI, whose wheel carries its US-English acoustic model, dictionary and language model, 29 MB;
nothing is downloaded at run time). The recogniser decodes exactly as many digits as the challenge
has, with a grammar of the ten digit words ("oh" for zero too), and the answer counts as right
when it is within ``max_edits`` insertions, deletions or substitutions of the challenge: the
recogniser makes mistakes on real speech, and two errors in five digits still leave a random other
sequence about a 1 % chance (``benchmarks/liveness.py`` measures both rates).

What it does not do: it is no defence against a live attacker with a voice-conversion or
text-to-speech system that can say the digits in the enrolled voice, nor against someone who
splices recordings of the person saying each digit. English digits only.
"""

from __future__ import annotations

import secrets

import numpy as np

from ..config import SAMPLE_RATE_HZ
from ..errors import InputError, shown

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_DIGITS = 5
"""Digits in a random challenge."""
MAX_EDITS = 2
"""Recognition errors (insertions, deletions, substitutions) tolerated in an answer."""
MAX_ANSWER_S = 60.0
"""Longest recording accepted as an answer (seconds)."""
DITHER = 1e-3
"""Seeded noise added before recognition (full scale 1): PocketSphinx decodes digital silence
badly (its feature normalisation sees log(0))."""


def make_challenge(n_digits: int = DEFAULT_DIGITS) -> str:
    """A random digit string from the operating system's CSPRNG (unpredictable to an attacker)."""
    return "".join(secrets.choice("0123456789") for _ in range(n_digits))


def parse_challenge(text: str) -> str:
    """The digits of a challenge given on the command line; InputError if it is not 3-12 digits."""
    digits = "".join(text.split()).replace("-", "")
    if not digits.isdigit() or not digits.isascii() or not 3 <= len(digits) <= 12:
        raise InputError(f"--challenge {shown(text)}: give 3 to 12 digits, e.g. --challenge "
                         "31415")
    return digits


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[:], i
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
    return row[-1]


class DigitRecognizer:
    """PocketSphinx decoding a fixed number of spoken English digits."""

    def __init__(self) -> None:
        try:
            import pocketsphinx
        except ImportError:
            raise InputError("--challenge needs the optional speech recogniser: "
                             "pip install 'rtverify[liveness]' (pocketsphinx)") from None
        self._ps = pocketsphinx
        self._decoders: dict[int, object] = {}

    def _decoder(self, n_digits: int):
        if n_digits not in self._decoders:
            digit = " | ".join(DIGIT_WORDS + ("oh",))
            grammar = (f"#JSGF V1.0;\ngrammar digits;\npublic <digits> = "
                       f"{' '.join(['<digit>'] * n_digits)};\n<digit> = {digit};\n")
            decoder = self._ps.Decoder(loglevel="FATAL", samprate=SAMPLE_RATE_HZ)
            decoder.add_jsgf_string("digits", grammar)
            decoder.activate_search("digits")
            self._decoders[n_digits] = decoder
        return self._decoders[n_digits]

    def recognise(self, samples: np.ndarray, n_digits: int) -> str:
        """The ``n_digits`` digits heard in float32 16 kHz mono ``samples`` (fewer if the
        recogniser finds no complete path)."""
        x = np.asarray(samples, dtype=np.float64)
        x = x + np.random.default_rng(0).normal(0.0, DITHER, len(x))
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        decoder = self._decoder(n_digits)
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        words = hyp.hypstr.split() if hyp is not None else []
        value = {w: str(i) for i, w in enumerate(DIGIT_WORDS)} | {"oh": "0"}
        return "".join(value[w] for w in words if w in value)


def check_answer(heard: str, challenge: str, max_edits: int = MAX_EDITS) -> tuple[bool, int]:
    """Whether what was heard answers the challenge, and the number of edits between them."""
    edits = edit_distance(heard, challenge)
    return edits <= max_edits, edits
