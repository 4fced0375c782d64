/// The regular expressions of PEFT's `rank_pattern` / `alpha_pattern` keys,
/// read with Python's `re` syntax as far as qconv matches them: literals,
/// escapes, `.`, character classes (`[a-z]`, `\d`, `\w`, `\s` and their
/// negations), `*`, `+`, `?`, `{m,n}` (lazy forms too), `|`, groups
/// (`(...)`, `(?:...)`, `(?P<name>...)`), comments and the anchors `^`, `$`,
/// `\A`, `\Z`, `\b`, `\B`. These describe regular languages, which
/// `PatternProgram` matches in time linear in the name and the pattern.
///
/// Python's other constructs (backreferences, lookaround, atomic groups,
/// possessive repeats, conditionals, inline flags) cannot be matched that
/// way; they are refused (`PatternProblem.unsupported`), never approximated.
/// What Python itself rejects is `PatternProblem.invalid`.
indirect enum PatternNode: Equatable {
    case scalar(Unicode.Scalar)
    /// `.`: any character but a newline (Python without DOTALL).
    case anyButNewline
    case set(ScalarSet)
    case sequence([PatternNode])
    case alternation([PatternNode])
    /// `max` nil: unbounded.
    case repetition(PatternNode, min: Int, max: Int?)
    case assertion(PatternAssertion)
}

/// A zero-width test at a position between characters.
enum PatternAssertion: Equatable {
    /// `^`, `\A`: the start of the name.
    case start
    /// `\Z`: the end of the name.
    case end
    /// `$`: the end, or just before a newline that ends the name (Python's rule).
    case endOrFinalNewline
    /// `\b`, `\B`: between a word character and a non-word one (or not).
    case wordBoundary(Bool)
}

/// A character class: ranges of scalars and categories, possibly negated.
struct ScalarSet: Equatable {
    enum Item: Equatable {
        case range(ClosedRange<UInt32>)
        case category(ScalarCategory, negated: Bool)
    }
    var items: [Item]
    var negated: Bool

    func contains(_ scalar: Unicode.Scalar) -> Bool {
        let found = items.contains { item in
            switch item {
            case .range(let range): return range.contains(scalar.value)
            case let .category(category, negated): return category.contains(scalar) != negated
            }
        }
        return found != negated
    }

    /// The one scalar a class like `[.]` stands for, if that is all it holds.
    var singleScalar: Unicode.Scalar? {
        guard !negated, items.count == 1, case .range(let range) = items[0], range.lowerBound == range.upperBound else { return nil }
        return Unicode.Scalar(range.lowerBound)
    }
}

/// Python's `\d`, `\w` and `\s` on `str` patterns (Unicode).
enum ScalarCategory: Equatable {
    case digit, word, space

    func contains(_ scalar: Unicode.Scalar) -> Bool {
        switch self {
        case .digit: return scalar.properties.numericType == .decimal
        case .word: return Self.isWord(scalar)
        // Python's str.isspace: Unicode White_Space, plus the separators U+001C to U+001F.
        case .space: return scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
        }
    }

    /// Python's `\w`: `_`, letters (Lu, Ll, Lt, Lm, Lo) and anything with a numeric value.
    static func isWord(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.isASCII {
            let v = scalar.value
            return (0x30...0x39).contains(v) || (0x41...0x5A).contains(v) || (0x61...0x7A).contains(v) || v == 0x5F
        }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return scalar.properties.numericType != nil
        }
    }
}

/// Why a key cannot be matched.
enum PatternProblem: Error, Equatable {
    /// Python's `re` refuses it too.
    case invalid(String)
    /// Valid in Python, but outside what qconv matches in linear time.
    case unsupported(String)
}

extension PatternNode {
    var isAssertion: Bool {
        if case .assertion = self { return true }
        return false
    }
}
