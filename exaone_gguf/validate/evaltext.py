"""The built-in evaluation text: Korean, English, code and digits, written for this project.

EXAONE is bilingual, so a validation text must exercise Hangul syllables, Latin words, punctuation,
indentation runs and digit-by-digit number tokens alike. The text is original (no licence strings
attached) and about 2,000 characters: a few hundred tokens, enough for stable KL statistics and
longer than a test model's sliding window, short enough for a numpy forward pass on a laptop.
"""

from __future__ import annotations

from pathlib import Path

from exaone_gguf.errors import InputError

EVAL_TEXT = """\
서울의 아침은 지하철 안내 방송으로 시작된다. 2호선 열차가 강남역에 도착하자 사람들이 한꺼번에 내렸고,
커피 한 잔을 든 학생은 오늘 오후 3시 15분에 있을 발표를 다시 떠올렸다. 발표 주제는 "작은 언어 모델을
노트북에서 빠르게 돌리는 방법"이었다. 그는 모델의 가중치를 4비트로 줄이면 메모리가 약 4분의 1로
줄어들지만, 정확도가 얼마나 떨어지는지는 직접 재어 보아야 한다고 메모해 두었다.

The same morning, a maintainer in another time zone was reading a bug report. "The converted file loads,"
the reporter wrote, "but every answer ends in the middle of a sentence." She suspected the end-of-turn
token: if the stop token is wrong, the model keeps talking or stops too early. Checking the numbers
first, she found that token 361 was marked as the end of generation, exactly as the config said.

한국어와 영어를 함께 쓰는 문서는 토크나이저에게 좋은 시험이 된다. 예를 들어 "LG AI연구원의 EXAONE 모델은
한국어와 English를 모두 이해한다"라는 문장에는 한글 음절, 라틴 문자, 띄어쓰기가 고르게 섞여 있다.
숫자도 빠뜨리면 안 된다: 2024년 12월 9일, 가격은 12,800원, 비율은 37.5%, 전화번호는 02-123-4567.

def perplexity(log_probs: list[float]) -> float:
    \"\"\"Return exp of the mean negative log-probability.\"\"\"
    if not log_probs:
        raise ValueError("need at least one token")
    total = 0.0
    for lp in log_probs:
        total -= lp
    return math.exp(total / len(log_probs))

for step in range(3):
    print(f"step {step}: loss={1.0 / (step + 1):.4f}")

A quantized model is only useful if it still says the same things. One honest way to check is to run
the original weights and the compressed ones on the same text and compare, token by token, how much
probability each assigns to what actually comes next. When the two agree on the most likely token
more than nine times out of ten, and the divergence between their distributions stays small, the
build can ship; otherwise something in the conversion went wrong.

가을이 되면 한강 공원에는 자전거를 타는 사람들이 늘어난다. 바람은 선선하고 하늘은 높으며, 강 건너편
빌딩 유리창에는 저녁노을이 비친다. 어떤 사람은 돗자리를 펴고 라면을 끓여 먹고, 어떤 사람은 이어폰을
끼고 천천히 걷는다. 주말 저녁 7시쯤이면 편의점 앞 의자가 모두 찬다.

Train timetable (weekdays):
| line | from    | to     | departs | minutes |
|------|---------|--------|---------|---------|
| KTX  | Seoul   | Busan  | 06:00   | 159     |
| ITX  | Yongsan | Iksan  | 07:42   | 186     |

마지막으로, 검증 보고서는 사람이 읽기 쉬워야 한다. 실패한 항목이 무엇이고, 기준값이 얼마였으며, 실제로
측정된 값이 얼마인지 한 줄로 보여 주면 충분하다. 그래야 다음 사람이 같은 실수를 반복하지 않는다.
"""


def load_text(path: Path | str | None) -> str:
    """The text at `path` (UTF-8), or the built-in EVAL_TEXT when path is None."""
    if path is None:
        return EVAL_TEXT
    text = read_text_file(path, "evaluation")
    if not text.strip():
        raise InputError(f"{path}: evaluation text is empty; give at least a few sentences.")
    return text


def read_text_file(path: Path | str, what: str) -> str:
    """A user's UTF-8 text file (`what`: "evaluation", "calibration"), or one sentence saying what is wrong."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{p}: {what} text file not found; pass an existing UTF-8 text file.") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory; pass a UTF-8 text file.") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not valid UTF-8; save the {what} text as UTF-8.") from None
