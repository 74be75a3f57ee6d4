"""The built-in texts, written for this project and ours to ship: the evaluation text `validate` compares logits
on, and the calibration text for `exaone-gguf imatrix`.

EXAONE is bilingual, so the evaluation text exercises Hangul syllables, Latin words, punctuation, indentation runs
and digit-by-digit number tokens alike. It is original (no licence strings attached) and about 2,000 characters: a
few hundred tokens, enough for stable KL statistics and longer than a test model's sliding window, short enough for
a numpy forward pass on a laptop.

An importance matrix should see what the model will be asked to do: Korean and English prose, code, arithmetic and
algebra written out, and chat turns in the family's own template (rendered from the checkpoint's chat template, so
its role markers are the real special tokens). The calibration text is about 9,000 characters: a few thousand
tokens, several 512-token chunks.
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


# ------------------------------------------------------------------------------------------------- calibration

PROSE = """\
부산의 저녁은 바다 냄새와 함께 온다. 광안대교에 불이 켜지면 산책하던 사람들이 발걸음을 멈추고 사진을 찍는다.
한 대학원생은 벤치에 앉아 노트북을 열었다. 그녀의 연구 주제는 "작은 기기에서 큰 언어 모델을 정확하게 돌리는 법"이다.
가중치를 4비트로 줄이면 파일은 작아지지만, 어떤 층은 다른 층보다 훨씬 민감하다. 그래서 그녀는 층마다 오차를 재고,
민감한 층에는 비트를 더 주고 둔감한 층에서는 비트를 아끼는 계획표를 만들었다. 실험 결과는 표 3에 정리되어 있다:
평균 KL 발산은 0.031에서 0.018로 줄었고, 첫 번째 예측 토큰이 원본과 같은 비율은 91.2%에서 94.7%로 올랐다.

In a small office in Seoul, two engineers argued about calibration data. "If the text is only news articles,"
one of them said, "the matrix will never see a for-loop or a fraction, and the code answers will suffer."
The other agreed, and they wrote a mixed corpus: a paragraph of Korean, a paragraph of English, a function
in Python, a proof sketch, and a few conversations. They measured twice, changed one thing at a time, and
kept a notebook of every run, because a number without its conditions is only a rumour.

기상청은 내일 오전 중부지방에 5~20mm의 비가 내리고, 오후에는 기온이 18도까지 오를 것으로 예보했다.
도서관은 월요일부터 금요일까지 오전 9시에 문을 열고 오후 10시에 닫는다. 대출 기간은 14일이며, 한 번 연장할 수 있다.
김치찌개를 끓일 때는 잘 익은 김치 300g, 돼지고기 200g, 두부 반 모, 대파 한 대가 필요하다. 먼저 고기를 볶은 뒤
김치를 넣고 5분 더 볶다가 물 500ml를 붓고 20분간 끓인다.

The committee met on Thursday, 14 March, at half past two. Attendance: eleven of fifteen members. The
treasurer reported a balance of 4,218.50 euros after the spring fair, and proposed spending 1,200 on new
chairs for the reading room. The motion passed nine to two. Next meeting: the first Thursday in May.
"""

CODE = '''\
def moving_average(values: list[float], window: int) -> list[float]:
    """Mean of each run of `window` consecutive values (len(values) - window + 1 results)."""
    if window <= 0:
        raise ValueError("window must be positive")
    total = sum(values[:window])
    out = [total / window]
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        out.append(total / window)
    return out


class LRUCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: dict[str, int] = {}

    def get(self, key: str) -> int | None:
        if key not in self.items:
            return None
        value = self.items.pop(key)
        self.items[key] = value  # most recently used goes last
        return value

    def put(self, key: str, value: int) -> None:
        self.items.pop(key, None)
        self.items[key] = value
        if len(self.items) > self.capacity:
            del self.items[next(iter(self.items))]
'''

CODE2 = """\
#include <stdio.h>

/* 이진 탐색: 정렬된 배열에서 key의 위치, 없으면 -1 */
int binary_search(const int *a, int n, int key) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (a[mid] == key) return mid;
        if (a[mid] < key) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

SELECT region, COUNT(*) AS orders, ROUND(AVG(total), 2) AS mean_total
FROM sales WHERE ordered_at >= '2025-01-01'
GROUP BY region ORDER BY orders DESC LIMIT 10;
"""

MATHS = """\
문제: 등차수열의 첫째항이 3이고 공차가 4일 때, 첫째항부터 제20항까지의 합을 구하시오.
풀이: 제20항은 a_20 = 3 + (20 - 1) * 4 = 79 이다. 합은 S_20 = 20 * (3 + 79) / 2 = 820 이다.

Solve x^2 - 5x + 6 = 0. Factor: (x - 2)(x - 3) = 0, so x = 2 or x = 3. Check: 4 - 10 + 6 = 0 and 9 - 15 + 6 = 0.

The derivative of f(x) = x^3 * ln(x) is f'(x) = 3x^2 * ln(x) + x^2 = x^2 (3 ln(x) + 1).
The integral of 2x from 0 to 3 is [x^2] from 0 to 3 = 9.
If P(A) = 0.3 and P(B) = 0.5 and A, B are independent, then P(A and B) = 0.15 and P(A or B) = 0.65.
확률: 주사위 두 개를 던져 눈의 합이 7이 될 확률은 6/36 = 1/6 이다.
Matrix product: [[1, 2], [3, 4]] x [[0, 1], [1, 0]] = [[2, 1], [4, 3]]; its determinant is -2 * -1 = 2.
"""

# Chat turns rendered with the checkpoint's own template (calibration_text); plain text when it has none.
CHATS = [
    [
        {"role": "system", "content": "You are a helpful assistant. 한국어와 영어로 답할 수 있습니다."},
        {"role": "user", "content": "서울에서 부산까지 KTX로 얼마나 걸려요?"},
        {"role": "assistant", "content": "KTX로 서울역에서 부산역까지는 보통 2시간 30분에서 2시간 50분 정도 걸립니다."},
        {"role": "user", "content": "And in English, how far is it?"},
        {
            "role": "assistant",
            "content": "By rail the distance is roughly 420 kilometres, so the train averages about 160 km/h.",
        },
    ],
    [
        {"role": "user", "content": "Write a Python one-liner that counts the vowels in a string s."},
        {"role": "assistant", "content": "sum(ch in 'aeiouAEIOU' for ch in s)"},
        {"role": "user", "content": "12 * 17 은 얼마야? 계산 과정도 보여줘."},
        {"role": "assistant", "content": "12 * 17 = 12 * 10 + 12 * 7 = 120 + 84 = 204 입니다."},
    ],
]


def plain_chats() -> str:
    return "\n\n".join("\n".join(f"{m['role']}: {m['content']}" for m in chat) for chat in CHATS)


def calibration_text(chat_template: str | None = None, bos_token: str = "", eos_token: str = "") -> str:
    """The built-in calibration text; chat turns in `chat_template` when given (a template that fails to
    render falls back to plain 'role: text' lines, as the text is calibration data, not a template test)."""
    from exaone_gguf.chat_template import TemplateError, render

    chats = plain_chats()
    if chat_template:
        try:
            chats = "\n".join(
                render(chat_template, chat, add_generation_prompt=False, bos_token=bos_token, eos_token=eos_token)
                for chat in CHATS
            )
        except TemplateError:
            chats = plain_chats()
    return "\n\n".join([PROSE, CODE, MATHS, chats, CODE2, PROSE, chats])


def checkpoint_calibration_text(tok) -> str:
    """The built-in calibration text for a checkpoint's tokenizer (checkpoint.tokenizer): its chat turns in the
    checkpoint's own template, with its own BOS and EOS strings."""
    return calibration_text(tok.chat_template, _token_text(tok, tok.bos_token_id), _token_text(tok, tok.eos_token_id))


def _token_text(tok, token_id: int | None) -> str:
    return (tok.build_reference().id_to_token(token_id) or "") if token_id is not None else ""
