/// Which tensors a conversion quantizes; the rest are stored as they are.
///
/// Default: floating-point tensors of rank >= 2, except embeddings, `lm_head`
/// and norms, which is what transformers leaves unquantized. `all` takes
/// every floating-point tensor. `only` patterns narrow the choice to the
/// names they match: among tensors of rank >= 2 (any rank with `all`), and
/// there the embeddings, `lm_head` and norms a pattern names are taken too.
/// `skip` patterns then remove matches.
public struct TensorSelection {
    public let all: Bool
    public let only: NamePatterns
    public let skip: NamePatterns

    public init(all: Bool = false, only: [String] = [], skip: [String] = []) throws {
        self.all = all
        self.only = try NamePatterns(only)
        self.skip = try NamePatterns(skip)
    }

    /// What the selection does with a tensor, and why.
    public enum Decision: Equatable, Sendable {
        case quantize(QuantizeReason)
        case keep(KeepReason)

        public var quantizes: Bool {
            if case .quantize = self { return true }
            return false
        }
    }

    public enum QuantizeReason: String, Sendable {
        /// A 2-D (or higher) float weight, as transformers quantizes.
        case weight
        /// Every float tensor was asked for.
        case all
        /// An `only` pattern names it.
        case named
    }

    public enum KeepReason: String, Sendable {
        case notFloat = "not float"
        case empty
        case oneDimensional = "1-D"
        case embedding
        case lmHead = "lm_head"
        case norm
        /// A `skip` pattern names it.
        case skipped
        /// No `only` pattern names it.
        case notNamed = "not named"
    }

    public func decision(for tensor: TensorInfo) -> Decision {
        guard tensor.dtype.isDecodableToFloat else { return .keep(.notFloat) }
        guard tensor.elementCount > 0 else { return .keep(.empty) }
        let name = tensor.name
        if skip.matches(name) { return .keep(.skipped) }
        if !only.isEmpty {
            guard only.matches(name) else { return .keep(.notNamed) }
            return all || tensor.shape.count >= 2 ? .quantize(.named) : .keep(.oneDimensional)
        }
        if all { return .quantize(.all) }
        guard tensor.shape.count >= 2 else { return .keep(.oneDimensional) }
        if let reason = Self.defaultExclusion(name) { return .keep(reason) }
        return .quantize(.weight)
    }

    public func shouldQuantize(_ tensor: TensorInfo) -> Bool { decision(for: tensor).quantizes }

    /// Checks the selection against a model's tensors: every pattern names
    /// some tensor, and `only` patterns leave something to quantize.
    ///
    /// - Throws: `SelectionError`.
    public func check(against tensors: [TensorInfo]) throws {
        let names = tensors.map(\.name)
        for (role, patterns) in [(SelectionError.Role.only, only), (.skip, skip)] {
            for pattern in patterns.patterns where !names.contains(where: pattern.matches) {
                throw SelectionError.patternMatchesNothing(role: role, pattern: pattern.text, closest: Self.closest(to: pattern, in: names))
            }
        }
        if !only.isEmpty, !tensors.contains(where: shouldQuantize) {
            let named = tensors.filter { only.matches($0.name) }
            let reasons = Set(named.map { decision(for: $0) }.compactMap { decision -> String? in
                if case .keep(let reason) = decision { return reason.rawValue }
                return nil
            })
            throw SelectionError.nothingToQuantize(patterns: only.texts, reasons: reasons.sorted())
        }
    }

    /// Embeddings (`embed_tokens`, `word_embeddings`, GPT-2's `wte`/`wpe`),
    /// `lm_head` and norms (`*norm*`, GPT-2's `ln_*`).
    public static func isLeftUnquantizedByDefault(_ name: String) -> Bool { defaultExclusion(name) != nil }

    static func defaultExclusion(_ name: String) -> KeepReason? {
        for component in name.lowercased().split(separator: ".") {
            if component.contains("embed") || component == "wte" || component == "wpe" { return .embedding }
            if component == "lm_head" { return .lmHead }
            if component.contains("norm") || component.hasPrefix("ln_") { return .norm }
        }
        return nil
    }

    /// Up to three names whose dot-separated parts come closest to the
    /// pattern's literal text (an edit distance, and parts that contain it first).
    static func closest(to pattern: NamePatterns.Pattern, in names: [String]) -> [String] {
        let wanted = Array(pattern.literalText.lowercased().filter { $0 != "*" })
        guard !wanted.isEmpty else { return Array(names.prefix(3)) }
        func score(_ name: String) -> Int {
            name.lowercased().split(separator: ".").map { part in
                part.contains(String(wanted)) ? 0 : editDistance(wanted, Array(part))
            }.min() ?? Int.max
        }
        let scored = names.map { ($0, score($0)) }
        guard let best = scored.map(\.1).min(), best <= max(2, wanted.count / 2) else { return [] }
        return Array(scored.filter { $0.1 == best }.map(\.0).prefix(3))
    }

    /// A description for reports: "default", "all", or the patterns.
    public var json: JSONValue {
        .object([
            "rule": .string(only.isEmpty ? (all ? "all" : "default") : "only"),
            "only": .array(only.texts.map { .string($0) }),
            "skip": .array(skip.texts.map { .string($0) }),
        ])
    }
}

/// Levenshtein distance between two strings' characters.
func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous = Array(0...b.count), current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}

/// A selection that would do nothing the user meant (exit 2).
public enum SelectionError: QConvError, Equatable {
    public enum Role: String, Sendable {
        case only, skip
    }

    /// A pattern names no tensor of the model.
    case patternMatchesNothing(role: Role, pattern: String, closest: [String])
    /// The `only` patterns name tensors, but none that can be quantized.
    case nothingToQuantize(patterns: [String], reasons: [String])

    public var category: ErrorCategory { .usage }

    public var description: String {
        switch self {
        case let .patternMatchesNothing(role, pattern, closest):
            let hint = closest.isEmpty ? "" : "; the closest names: \(closest.joined(separator: ", "))"
            let glob = pattern.hasPrefix(NamePatterns.Pattern.regexPrefix) || pattern.contains("*") ? ""
                : " (a pattern matches whole names: '*\(pattern)*' matches names that contain it)"
            return "the \(role.rawValue) pattern '\(pattern)' matches no tensor\(glob)\(hint)"
        case let .nothingToQuantize(patterns, reasons):
            return "the only patterns \(patterns.map { "'\($0)'" }.joined(separator: " ")) name no tensor that can be quantized "
                + "(those they name are kept: \(reasons.joined(separator: ", ")))"
        }
    }
}
