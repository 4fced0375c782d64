/// Which tensors a conversion quantizes; the rest are stored raw.
///
/// Default: floating-point tensors of rank >= 2, except embeddings, `lm_head`
/// and norms, which is what transformers leaves unquantized. `all` takes
/// every floating-point tensor. `only` patterns replace that choice with the
/// float tensors whose names match one of them; `skip` patterns then remove
/// matches. Patterns are regular expressions searched anywhere in the name.
public struct TensorSelection {
    public var all: Bool
    public var onlyPatterns: [String] { only.patterns }
    public var skipPatterns: [String] { skip.patterns }
    private let only: NamePatterns
    private let skip: NamePatterns

    public init(all: Bool = false, only: [String] = [], skip: [String] = []) throws {
        self.all = all
        self.only = try NamePatterns(only)
        self.skip = try NamePatterns(skip)
    }

    public func shouldQuantize(_ tensor: TensorInfo) -> Bool {
        guard tensor.dtype.isDecodableToFloat, tensor.elementCount > 0 else { return false }
        let name = tensor.name
        if skip.matches(name) { return false }
        if !only.isEmpty { return only.matches(name) }
        if all { return true }
        return tensor.shape.count >= 2 && !Self.isLeftUnquantizedByDefault(name)
    }

    /// Embeddings (`embed_tokens`, `word_embeddings`, GPT-2's `wte`/`wpe`),
    /// `lm_head` and norms (`*norm*`, GPT-2's `ln_*`).
    public static func isLeftUnquantizedByDefault(_ name: String) -> Bool {
        let components = name.lowercased().split(separator: ".")
        return components.contains { component in
            component.contains("embed") || component == "lm_head" || component.contains("norm")
                || component == "wte" || component == "wpe" || component.hasPrefix("ln_")
        }
    }

    /// A description for reports: "default", "all", or the patterns.
    public var json: JSONValue {
        .object([
            "rule": .string(only.isEmpty ? (all ? "all" : "default") : "only"),
            "only": .array(onlyPatterns.map { .string($0) }),
            "skip": .array(skipPatterns.map { .string($0) }),
        ])
    }
}

/// Name patterns (a selection's `only` and `skip`, `verify`'s filter):
/// regular expressions searched anywhere in a tensor name, compiled once; a
/// name matches when one of them matches.
public struct NamePatterns {
    /// The patterns as the user wrote them.
    public let patterns: [String]
    private let compiled: [Regex<AnyRegexOutput>]

    /// - Throws: `NamePatternError` for a pattern that is not a regular expression.
    public init(_ patterns: [String]) throws {
        self.patterns = patterns
        compiled = try patterns.map { pattern in
            do { return try Regex(pattern) } catch { throw NamePatternError(pattern: pattern, reason: "\(error)") }
        }
    }

    public var isEmpty: Bool { compiled.isEmpty }

    public func matches(_ name: String) -> Bool {
        compiled.contains { name.contains($0) }
    }
}

/// A name pattern that is not a regular expression (exit 2).
public struct NamePatternError: QConvError, Equatable {
    public let pattern: String
    public let reason: String

    public var category: ErrorCategory { .usage }
    public var description: String { "invalid regular expression '\(pattern)': \(reason)" }
}
