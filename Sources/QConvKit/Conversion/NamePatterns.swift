/// Name patterns (a selection's `only` and `skip`, `verify`'s filter),
/// compiled once; a name matches when one of them matches.
///
/// A pattern is a glob matched against the whole name (`*` any run of
/// characters, dots included; `?` one character; `[abc]`, `[a-z]`, `[!a]` a
/// class; `\` takes the next character literally), or, with the prefix
/// `re:`, a regular expression searched anywhere in the name.
public struct NamePatterns {
    /// One pattern as the user wrote it, compiled.
    public struct Pattern {
        public let text: String
        fileprivate let matcher: Matcher

        fileprivate enum Matcher {
            case glob(Glob)
            case regex(Regex<AnyRegexOutput>)
        }

        /// - Throws: `NamePatternError` for an invalid regular expression or glob.
        public init(_ text: String) throws {
            self.text = text
            if text.hasPrefix(Self.regexPrefix) {
                let expression = String(text.dropFirst(Self.regexPrefix.count))
                do { matcher = .regex(try Regex(expression)) } catch {
                    throw NamePatternError(pattern: text, reason: "not a regular expression: \(error)")
                }
            } else {
                guard let glob = Glob(text) else { throw NamePatternError(pattern: text, reason: "a '[' class without its ']'") }
                matcher = .glob(glob)
            }
        }

        /// The prefix of a regular expression.
        public static let regexPrefix = "re:"

        public func matches(_ name: String) -> Bool {
            switch matcher {
            case .glob(let glob): return glob.matches(name)
            case .regex(let regex): return name.contains(regex)
            }
        }

        /// The literal text in the pattern (wildcards and classes left out), for suggestions.
        public var literalText: String {
            switch matcher {
            case .glob(let glob): return glob.literalText
            case .regex: return String(text.dropFirst(Self.regexPrefix.count).filter { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." })
            }
        }
    }

    public let patterns: [Pattern]

    /// - Throws: `NamePatternError` for a pattern that does not compile.
    public init(_ texts: [String]) throws {
        patterns = try texts.map(Pattern.init)
    }

    public var isEmpty: Bool { patterns.isEmpty }

    /// The patterns as the user wrote them.
    public var texts: [String] { patterns.map(\.text) }

    public func matches(_ name: String) -> Bool {
        patterns.contains { $0.matches(name) }
    }
}

/// A glob compiled to a list of elements, matched with the usual two-pointer
/// algorithm: time proportional to the name times the pattern at worst.
struct Glob {
    enum Element: Equatable {
        case character(Character)
        case any
        case anyRun
        case set(ranges: [ClosedRange<Character>], negated: Bool)
    }

    let elements: [Element]

    init?(_ text: String) {
        var elements: [Element] = []
        var characters = Array(text)[...]
        while let c = characters.popFirst() {
            switch c {
            case "*": if elements.last != .anyRun { elements.append(.anyRun) }
            case "?": elements.append(.any)
            case "\\": elements.append(.character(characters.popFirst() ?? "\\"))
            case "[":
                guard let set = Self.parseSet(&characters) else { return nil }
                elements.append(set)
            default: elements.append(.character(c))
            }
        }
        self.elements = elements
    }

    /// A class after its `[`, up to and including its `]`.
    private static func parseSet(_ characters: inout ArraySlice<Character>) -> Element? {
        var negated = false
        if let first = characters.first, first == "!" || first == "^" {
            negated = true
            characters.removeFirst()
        }
        var ranges: [ClosedRange<Character>] = []
        var first = true
        while let c = characters.popFirst() {
            if c == "]" && !first { return .set(ranges: ranges, negated: negated) }
            first = false
            if characters.count >= 2, characters.first == "-", characters.dropFirst().first != "]" {
                characters.removeFirst()
                let upper = characters.removeFirst()
                if c <= upper { ranges.append(c...upper) }
            } else {
                ranges.append(c...c)
            }
        }
        return nil
    }

    private func accepts(_ element: Element, _ c: Character) -> Bool {
        switch element {
        case .character(let expected): return c == expected
        case .any, .anyRun: return true
        case let .set(ranges, negated): return ranges.contains { $0.contains(c) } != negated
        }
    }

    func matches(_ name: String) -> Bool {
        let text = Array(name)
        var (t, p) = (0, 0)
        var star: (pattern: Int, text: Int)?
        while t < text.count {
            if p < elements.count, elements[p] == .anyRun {
                star = (p, t)
                p += 1
            } else if p < elements.count, accepts(elements[p], text[t]) {
                p += 1
                t += 1
            } else if let (sp, st) = star {
                // Let the last `*` take one more character.
                p = sp + 1
                t = st + 1
                star = (sp, st + 1)
            } else {
                return false
            }
        }
        while p < elements.count, elements[p] == .anyRun { p += 1 }
        return p == elements.count
    }

    var literalText: String {
        String(elements.compactMap { element -> Character? in
            if case .character(let c) = element { return c }
            return nil
        })
    }
}

/// A name pattern that does not compile (exit 2).
public struct NamePatternError: QConvError, Equatable {
    public let pattern: String
    public let reason: String

    public var category: ErrorCategory { .usage }
    public var description: String { "invalid name pattern '\(pattern)': \(reason)" }
}
