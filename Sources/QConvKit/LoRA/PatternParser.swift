/// Parses a key with Python's rules (`sre_parse`) for the constructs above.
struct PatternParser {
    /// Groups nested deeper than this are refused (the parser and compiler recurse per level).
    static let maximumDepth = 100
    /// Repetition counts above this are refused (a count repeats the program).
    static let maximumCount = 1000

    private let scalars: [Unicode.Scalar]
    private var position = 0
    private var depth = 0
    /// Capturing groups opened so far, and those closed (Python checks group references against them).
    private var groupCount = 0
    private var closedGroups: Set<Int> = []
    private var groupNames: Set<[Unicode.Scalar]> = []

    /// Parses `text`. Positions in messages count from the start of `key`
    /// (where a key pasted into a larger pattern is; all of `text` by
    /// default), and are left out for problems outside it.
    static func parse(_ text: String, key: Range<Int>? = nil) throws -> PatternNode {
        let scalars = Array(text.unicodeScalars)
        var parser = PatternParser(scalars: scalars, key: key ?? 0..<scalars.count)
        let node = try parser.parseAlternation()
        if parser.position < parser.scalars.count { throw PatternProblem.invalid("unbalanced parenthesis\(parser.at(parser.position))") }
        return node
    }

    private let key: Range<Int>

    private init(scalars: [Unicode.Scalar], key: Range<Int>) {
        self.scalars = scalars
        self.key = key
    }

    /// " at position N" of the key, or nothing outside it.
    private func at(_ position: Int) -> String {
        key.contains(position) ? " at position \(position - key.lowerBound)" : ""
    }

    private var peek: Unicode.Scalar? { position < scalars.count ? scalars[position] : nil }

    private mutating func next() -> Unicode.Scalar? {
        guard let scalar = peek else { return nil }
        position += 1
        return scalar
    }

    private mutating func take(_ scalar: Unicode.Scalar) -> Bool {
        guard peek == scalar else { return false }
        position += 1
        return true
    }

    private mutating func parseAlternation() throws -> PatternNode {
        var branches = [try parseSequence()]
        while take("|") { branches.append(try parseSequence()) }
        return branches.count == 1 ? branches[0] : .alternation(branches)
    }

    private mutating func parseSequence() throws -> PatternNode {
        var items: [PatternNode] = []
        // What the last item is, for Python's "nothing to repeat" (a bare anchor) and "multiple repeat".
        var lastIsRepeat = false, lastIsAnchor = false
        while let scalar = peek, scalar != "|", scalar != ")" {
            let start = position
            position += 1
            if let (min, max) = try quantifier(scalar) {
                guard let last = items.last, !lastIsAnchor else { throw PatternProblem.invalid("nothing to repeat\(at(start))") }
                guard !lastIsRepeat else { throw PatternProblem.invalid("multiple repeat\(at(start))") }
                if take("+") { throw PatternProblem.unsupported("a possessive repeat\(at(start))") }
                _ = take("?")  // lazy: the same names match
                items[items.count - 1] = .repetition(last, min: min, max: max)
                lastIsRepeat = true
                continue
            }
            switch scalar {
            case "(":
                guard let group = try parseGroup() else { continue }  // a comment
                items.append(group)
            case "[": items.append(.set(try parseClass()))
            case ".": items.append(.anyButNewline)
            case "^": items.append(.assertion(.start))
            case "$": items.append(.assertion(.endOrFinalNewline))
            case "\\": items.append(try parseEscape())
            default: items.append(.scalar(scalar))
            }
            lastIsAnchor = scalar != "(" && items.last?.isAssertion == true
            lastIsRepeat = false
        }
        return items.count == 1 ? items[0] : .sequence(items)
    }

    /// The bounds of `*`, `+`, `?` or `{m,n}`; nil when `scalar` is none of
    /// them (a `{` that does not form a count is a literal, as in Python).
    private mutating func quantifier(_ scalar: Unicode.Scalar) throws -> (Int, Int?)? {
        switch scalar {
        case "*": return (0, nil)
        case "+": return (1, nil)
        case "?": return (0, 1)
        case "{":
            let here = position
            guard peek != "}" else { return nil }
            let low = digits()
            let high = take(",") ? digits() : low
            guard take("}") else {
                position = here
                return nil
            }
            let min = try count(low) ?? 0, max = try count(high)
            if let max, max < min { throw PatternProblem.invalid("min repeat greater than max repeat\(at(here - 1))") }
            return (min, max)
        default:
            return nil
        }
    }

    private mutating func digits() -> [Unicode.Scalar] {
        var result: [Unicode.Scalar] = []
        while let scalar = peek, ("0"..."9").contains(scalar) {
            result.append(scalar)
            position += 1
        }
        return result
    }

    private func count(_ digits: [Unicode.Scalar]) throws -> Int? {
        guard !digits.isEmpty else { return nil }
        var value = 0
        for digit in digits {
            value = value * 10 + Int(digit.value - 0x30)
            if value > Self.maximumCount { throw PatternProblem.unsupported("a repetition count above \(Self.maximumCount)") }
        }
        return value
    }

    /// After `(`: a group's alternation, or nil for a comment `(?#...)`.
    private mutating func parseGroup() throws -> PatternNode? {
        let start = position - 1
        var capturing = true
        if take("?") {
            capturing = false
            guard let kind = next() else { throw PatternProblem.invalid("unexpected end of pattern\(at(position))") }
            switch kind {
            case ":": break
            case "P":
                if take("=") { throw PatternProblem.unsupported("a backreference (?P=...)\(at(start))") }
                guard take("<") else { throw PatternProblem.invalid("unknown extension ?P\(at(start))") }
                try parseGroupName()
                capturing = true
            case "#":
                while let scalar = next() { if scalar == ")" { return nil } }
                throw PatternProblem.invalid("missing ), unterminated comment\(at(start))")
            case "=", "!": throw PatternProblem.unsupported("a lookahead assertion\(at(start))")
            case "<" where peek == "=" || peek == "!": throw PatternProblem.unsupported("a lookbehind assertion\(at(start))")
            case ">": throw PatternProblem.unsupported("an atomic group\(at(start))")
            case "(": throw PatternProblem.unsupported("a conditional group\(at(start))")
            case "a", "i", "L", "m", "s", "u", "x", "-":
                while let flag = peek, "aiLmsux-".unicodeScalars.contains(flag) { position += 1 }
                if peek == ")" && start > 0 { throw PatternProblem.invalid("global flags not at the start of the expression\(at(start))") }
                throw PatternProblem.unsupported("inline flags\(at(start))")
            default: throw PatternProblem.invalid("unknown extension ?\(kind)\(at(start))")
            }
        }
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maximumDepth else { throw PatternProblem.unsupported("groups nested more than \(Self.maximumDepth) deep") }
        if capturing { groupCount += 1 }
        let number = groupCount
        let body = try parseAlternation()
        guard take(")") else { throw PatternProblem.invalid("missing ), unterminated subpattern\(at(start))") }
        if capturing { closedGroups.insert(number) }
        return body
    }

    /// `name>` of `(?P<name>`: a Python identifier.
    private mutating func parseGroupName() throws {
        var name: [Unicode.Scalar] = [], closed = false
        while let scalar = next() {
            if scalar == ">" { closed = true; break }
            name.append(scalar)
        }
        guard closed else { throw PatternProblem.invalid("missing >, unterminated name") }
        guard groupNames.insert(name).inserted else { throw PatternProblem.invalid("redefinition of group name '\(String(String.UnicodeScalarView(name)))'") }
        guard let first = name.first, first == "_" || first.properties.isXIDStart,
              name.allSatisfy({ $0 == "_" || $0.properties.isXIDContinue }) else {
            throw PatternProblem.invalid("bad character in group name '\(String(String.UnicodeScalarView(name)))'")
        }
    }

    /// After `[`: a class, with Python's rules (`]` first is a literal, `-`
    /// first or last is a literal, ranges between single characters only).
    private mutating func parseClass() throws -> ScalarSet {
        let start = position - 1
        let negated = take("^")
        var items: [ScalarSet.Item] = []
        let first = position
        while true {
            guard let scalar = next() else { throw PatternProblem.invalid("unterminated character set\(at(start))") }
            if scalar == "]" && position - 1 != first { break }
            let low = try classAtom(scalar)
            guard take("-") else {
                items.append(low)
                continue
            }
            guard let other = next() else { throw PatternProblem.invalid("unterminated character set\(at(start))") }
            if other == "]" {
                items += [low, .range(0x2D...0x2D)]
                break
            }
            let high = try classAtom(other)
            guard case .range(let a) = low, case .range(let b) = high, a.lowerBound <= b.lowerBound else {
                throw PatternProblem.invalid("bad character range\(at(position - 1))")
            }
            items.append(.range(a.lowerBound...b.lowerBound))
        }
        return ScalarSet(items: items, negated: negated)
    }

    /// One member of a class: a character (as a one-scalar range) or a category.
    private mutating func classAtom(_ scalar: Unicode.Scalar) throws -> ScalarSet.Item {
        guard scalar == "\\" else { return .range(scalar.value...scalar.value) }
        guard let escaped = next() else { throw PatternProblem.invalid("bad escape (end of pattern)") }
        if let category = Self.category(escaped) { return category }
        let value: Unicode.Scalar
        switch escaped {
        case "b": value = "\u{08}"
        case "0"..."7": value = try octal(first: escaped)
        default: value = try literalEscape(escaped)
        }
        return .range(value.value...value.value)
    }

    private static func category(_ letter: Unicode.Scalar) -> ScalarSet.Item? {
        switch letter {
        case "d": return .category(.digit, negated: false)
        case "D": return .category(.digit, negated: true)
        case "w": return .category(.word, negated: false)
        case "W": return .category(.word, negated: true)
        case "s": return .category(.space, negated: false)
        case "S": return .category(.space, negated: true)
        default: return nil
        }
    }

    /// After `\` outside a class.
    private mutating func parseEscape() throws -> PatternNode {
        let start = position - 1
        guard let escaped = next() else { throw PatternProblem.invalid("bad escape (end of pattern)") }
        if let category = Self.category(escaped) { return .set(ScalarSet(items: [category], negated: false)) }
        switch escaped {
        case "A": return .assertion(.start)
        case "Z": return .assertion(.end)
        case "b": return .assertion(.wordBoundary(true))
        case "B": return .assertion(.wordBoundary(false))
        case "0": return .scalar(try octal(first: escaped))
        case "1"..."9":
            // Three octal digits are a character; anything else is a group reference (of one or two digits).
            if position + 1 < scalars.count, ("0"..."7").contains(escaped), ("0"..."7").contains(scalars[position]),
               ("0"..."7").contains(scalars[position + 1]) {
                return .scalar(try octal(first: escaped))
            }
            var group = Int(escaped.value - 0x30)
            if let digit = peek, ("0"..."9").contains(digit) {
                group = group * 10 + Int(digit.value - 0x30)
                position += 1
            }
            guard group <= groupCount else { throw PatternProblem.invalid("invalid group reference \(group)\(at(start + 1))") }
            guard closedGroups.contains(group) else { throw PatternProblem.invalid("cannot refer to an open group\(at(start))") }
            throw PatternProblem.unsupported("a backreference \\\(group)\(at(start))")
        default:
            return .scalar(try literalEscape(escaped))
        }
    }

    /// `\0`, `\12`, `\377`: up to three octal digits in all.
    private mutating func octal(first: Unicode.Scalar) throws -> Unicode.Scalar {
        var value = first.value - 0x30
        for _ in 0..<2 {
            guard let digit = peek, ("0"..."7").contains(digit) else { break }
            value = value * 8 + digit.value - 0x30
            position += 1
        }
        guard value <= 0o377, let scalar = Unicode.Scalar(value) else { throw PatternProblem.invalid("octal escape value outside of range 0-0o377") }
        return scalar
    }

    /// The escapes that stand for one character, the same in and out of classes.
    private mutating func literalEscape(_ escaped: Unicode.Scalar) throws -> Unicode.Scalar {
        switch escaped {
        case "a": return "\u{07}"
        case "f": return "\u{0C}"
        case "n": return "\n"
        case "r": return "\r"
        case "t": return "\t"
        case "v": return "\u{0B}"
        case "x": return try hexadecimal(digits: 2, escape: "x")
        case "u": return try hexadecimal(digits: 4, escape: "u")
        case "U": return try hexadecimal(digits: 8, escape: "U")
        case "N": throw PatternProblem.unsupported("a named character \\N{...}")
        default:
            // Python refuses an unknown escaped ASCII letter or digit; any other character stands for itself.
            if escaped.isASCII && (escaped.properties.isAlphabetic || ("0"..."9").contains(escaped)) {
                throw PatternProblem.invalid("bad escape \\\(escaped)")
            }
            return escaped
        }
    }

    private mutating func hexadecimal(digits: Int, escape: Character) throws -> Unicode.Scalar {
        var value: UInt32 = 0
        for _ in 0..<digits {
            guard let digit = peek, let nibble = Character(digit).hexDigitValue else {
                throw PatternProblem.invalid("incomplete escape \\\(escape)")
            }
            value = value * 16 + UInt32(nibble)
            position += 1
        }
        guard let scalar = Unicode.Scalar(value) else { throw PatternProblem.invalid("bad escape \\\(escape): not a character") }
        return scalar
    }
}
