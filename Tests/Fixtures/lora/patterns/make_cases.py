"""Reference answers of Python's `re` for PEFT's pattern test, for qconv's tests.

PEFT (peft/utils/other.py, get_pattern_key) gives a module the first
rank_pattern / alpha_pattern key for which

    re.match(rf"(.*\\.)?({key})$", name)

succeeds. This script writes python_re_cases.json: for each key, whether
Python compiles the pattern and, if it does, which of the names it matches.
Keys are hand-written (PEFT-style keys and the corners of Python's syntax)
and random (a small grammar over a small alphabet, so that matches happen).
Run with any Python 3.11+: python3 make_cases.py > python_re_cases.json
"""
import json
import random
import re
import sys

HAND = [
    "q_proj", "v_proj|k_proj", "layers.0.self_attn.q_proj", r"layers\.[12]\..*_proj", r"model\.layers\.\d+\.mlp\.down_proj",
    "^model.layers.0.mlp.up_proj", r"layers.(0|1).mlp.(gate|up)_proj", ".*q_proj", "o_proj$", "self_attn", "lm_head",
    "embed_tokens", "layers.1[0-9].mlp.down_proj", r"[.]q_proj", r"a\.b", "a.b", "a[.]b", "[]a]", "[^]]", "[a-]", "[-a]", r"[\d.]",
    r"[\w]+", r"\W", r"\s", r"\S+", r"\bq_proj", r"\Bproj", r"\Aq_proj", r"q_proj\Z", "x{", "x{}", "x{,2}", "x{2,}", "x{1,2}",
    "x{2}?", "x{,}", "x{a}", "x{1,2,3}", "x*?", "x+?", "x??", "(?:a|b)+", "(?P<name>q)_proj", "q(?#comment)_proj", "a|", "|a", "()",
    "(a|)+", "(a*)*", "((((((((((.*)*)*)*)*)*)*)*)*)*)*x$", "(x+x+)+y", "(a|aa)*b", ".*", "", ".", r"\x71_proj", r"\u0071_proj",
    r"\161_proj", r"\0", r"\n", "a\nb", r"[\n]", "[a-c]+", "[^a-c]+", r"[\x00-\x7f]+", "é", "[é]", "\\é", r"\.", r"\\", r"\-", "a)|(b",
    "a)(b", "a)|(.*", ")", "(", "a**", "*a", "+", "?", "a{2,1}", "[a", "[z-a]", r"\q", r"\8", r"[\8]", "(?P<1>a)", "(?P<a", "(?Z)",
    "(?#unterminated", "a\\", r"[\b]", "\\\u00e9", "{1}", "^*", "$+",
    # Valid in Python, refused by qconv: they cannot be matched in linear time.
    r"(a)\1", r"(?P<x>a)(?P=x)", "(?=a)a", "(?!b)a", "(?<=a)b", "(?<!a)b", "(?>a)", "a*+", "a++", "(?i)Q_PROJ", "(?s).", "(?(1)a|b)",
    r"\N{LATIN SMALL LETTER A}",
]
UNSUPPORTED = set(HAND[HAND.index(r"(a)\1"):])
# Python backtracks exponentially on these (that is why qconv does not use a
# backtracking matcher): Python is asked about an equivalent pattern instead.
EQUIVALENT = {"((((((((((.*)*)*)*)*)*)*)*)*)*)*x$": ".*x$", "(x+x+)+y": "xx+y", "(a|aa)*b": "a*b", "(a*)*": "a*"}

NAMES = [
    "q_proj", "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.xq_proj", "model.layers.0.self_attn.k_proj",
    "model.layers.1.mlp.down_proj", "model.layers.11.mlp.down_proj", "model.layers.2.mlp.up_proj", "model.layersX1.mlp.down_proj",
    "model.layers.0.mlp.gate_proj", "lm_head", "model.embed_tokens", "model.layers.0.self_attn.o_proj", "o_proj", "a", "b", "aa",
    "ab", "a.b", "a_b", "x.a.b", "x", "xx", "xxx", "x{", "x{}", "x{a}", "x{1,2,3}", "]a", "]", "-", "a-", "3", ".", "..", "", "\n",
    "q_proj\n", "a\nb", "x.a\nb", "a.\nb", "é", "e\u0301", "\u00e9.q_proj", "model.layers.0.self_attn.q_proj.x", "self_attn.q_proj",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "xxxxxxxxxxxxxxxxxxxxxxxxxx", "\x08", "\\", "q", "Q_PROJ", "model.layers.15.mlp.down_proj",
]

ALPHABET = ["a", "b", ".", "_", "0"]


def random_pattern(rng, depth=0):
    pieces = []
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.45:
            atom = rng.choice(ALPHABET + [r"\.", ".", "[ab]", "[^a]", r"\d", r"\w", "[.]"])
        elif r < 0.6 and depth < 3:
            atom = "(" + random_pattern(rng, depth + 1) + ")"
        elif r < 0.7 and depth < 3:
            atom = "(?:" + "|".join(random_pattern(rng, depth + 1) for _ in range(rng.randint(2, 3))) + ")"
        elif r < 0.75:
            atom = rng.choice(["^", "$", r"\b", r"\B", r"\A", r"\Z"])
            pieces.append(atom)
            continue
        else:
            atom = rng.choice(ALPHABET)
        if rng.random() < 0.35:
            atom += rng.choice(["*", "+", "?", "{2}", "{0,2}", "{1,}", "*?", "+?", "??", "{,1}"])
        pieces.append(atom)
    return "".join(pieces)


def random_name(rng):
    return "".join(rng.choice(ALPHABET + ["a", "b", "."]) for _ in range(rng.randint(0, 7)))


def case(key, names):
    try:
        pattern = re.compile(rf"(.*\.)?({EQUIVALENT.get(key, key)})$")
    except re.error as error:
        return {"key": key, "python": "error", "reason": str(error)}
    kind = "unsupported" if key in UNSUPPORTED else "ok"
    return {"key": key, "python": kind, "matches": [n for n in names if pattern.match(n)],
            "misses": [n for n in names if not pattern.match(n)]}


def main():
    rng = random.Random(17)
    cases = [case(key, NAMES) for key in HAND]
    for _ in range(400):
        names = sorted(set(random_name(rng) for _ in range(12)) | {"a", "b.a", "a.b", ""})
        cases.append(case(random_pattern(rng), names))
    json.dump(cases, sys.stdout, ensure_ascii=True, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
