/// The keys of one `rank_pattern` or `alpha_pattern` map, ready to answer
/// PEFT's question for a module name: which is the first key, in the map's
/// order, for which `re.match(rf"(.*\.)?({key})$", name)` succeeds?
///
/// Most keys are module names, whose only special characters are unescaped
/// dots (which match any character, as in Python). Such a key matches a
/// name exactly when the name's last `K` characters (K the key's length)
/// start the name or follow a `.`, and agree with the key wherever the key
/// has no dot. These keys are indexed by their length and the places of
/// their dots: a lookup reads the name's suffixes that start a component,
/// so it costs the same however many keys cannot match. The other keys are
/// compiled to `PatternProgram`s (linear time), and tried in order only
/// while they come before the best indexed match.
///
/// All lookups of one config share a step budget: a config whose patterns
/// would take more work than any real one is refused, naming the key.
struct ModulePatterns {
    /// The field the keys come from, and the keys in order (for messages).
    let field: String
    let keys: [String]
    /// Indexed keys by length, then by the places of their wildcard dots.
    private let groupsByLength: [Int: [ShapeGroup]]
    /// Whether any key is indexed.
    private let hasIndexedKeys: Bool
    /// The other keys, compiled, in map order.
    private let programs: [(index: Int, program: PatternProgram)]

    /// Keys of one length with their dots (wildcards) at the same places,
    /// by the UTF-8 of their other characters (code points compared, as
    /// Python does; never Swift's canonical string equality).
    private struct ShapeGroup {
        let length: Int
        let wildcards: [Int]
        var firstIndex: [[UInt8]: Int]
        /// The group's first key (named when the budget runs out on it).
        let representative: Int
    }

    /// The most instructions the compiled keys of one map may have together
    /// (memory: 24 bytes each; real maps have a few hundred).
    static let maximumTotalLength = 500_000

    /// Compiles every key; `problem(key, problem)` makes the error for a key that cannot be matched.
    init(field: String, keys: [String], problem: (String, PatternProblem) -> Error) throws {
        self.field = field
        self.keys = keys
        var groups: [Shape: ShapeGroup] = [:]
        var programs: [(index: Int, program: PatternProgram)] = []
        var totalLength = 0
        for (index, key) in keys.enumerated() {
            do {
                // A key that parses alone and is a plain name is indexed; any other is compiled
                // within PEFT's whole pattern (where a stray `)` closes PEFT's group, as in Python).
                if let atoms = (try? PatternParser.parse(key))?.plainAtoms {
                    let shape = Shape(length: atoms.count, wildcards: atoms.indices.filter { atoms[$0] == nil })
                    let literals = Self.utf8(atoms.compactMap { $0 })
                    if groups[shape] == nil { groups[shape] = ShapeGroup(length: shape.length, wildcards: shape.wildcards, firstIndex: [:], representative: index) }
                    if groups[shape]?.firstIndex[literals] == nil { groups[shape]?.firstIndex[literals] = index }
                } else {
                    let pattern = PatternProgram.pythonPattern(for: key)
                    let program = try PatternProgram(try PatternParser.parse(pattern.text, key: pattern.key))
                    totalLength += program.instructions.count
                    guard totalLength <= Self.maximumTotalLength else {
                        throw PatternProblem.unsupported("more than \(Self.maximumTotalLength) automaton steps together with the keys before it")
                    }
                    programs.append((index, program))
                }
            } catch let error as PatternProblem {
                throw problem(key, error)
            }
        }
        groupsByLength = Dictionary(grouping: groups.values) { $0.length }
        hasIndexedKeys = !groups.isEmpty
        self.programs = programs
    }

    private struct Shape: Hashable {
        let length: Int
        let wildcards: [Int]
    }

    private static func utf8(_ scalars: [Unicode.Scalar]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(scalars.count)
        for scalar in scalars { UTF8.encode(scalar) { bytes.append($0) } }
        return bytes
    }

    /// The index of the first key that matches `module`, or nil.
    ///
    /// - Throws: `PatternBudget.Exhausted` (with the key being tried) when
    ///   the config's lookups together pass the budget.
    func firstMatch(_ module: String, budget: PatternBudget) throws -> Int? {
        let name = Array(module.unicodeScalars)
        var best = try indexedMatch(name, budget: budget)
        for (index, program) in programs {
            if let found = best, found < index { break }
            var steps = 0
            let matched = program.matches(name, steps: &steps, limit: budget.remaining)
            try budget.spend(steps, key: keys[index])
            if matched == true {
                best = index
                break
            }
        }
        return best
    }

    /// The first indexed key that matches: for every suffix of the name that
    /// starts a component (and may end before a final newline, as `$`
    /// allows), the groups of keys of that length.
    private func indexedMatch(_ name: [Unicode.Scalar], budget: PatternBudget) throws -> Int? {
        guard hasIndexedKeys else { return nil }
        // `(.*\.)?` matches an empty prefix, or one that ends with `.` and has no newline before it.
        let firstNewline = name.firstIndex(of: "\n") ?? name.count
        var best: Int?
        var ends = [name.count]
        if name.last == "\n" { ends.append(name.count - 1) }
        for end in ends {
            for start in 0...end where start == 0 || (name[start - 1] == "." && start - 1 < firstNewline) {
                guard let groups = groupsByLength[end - start] else { continue }
                for group in groups {
                    try budget.spend(end - start + 1, key: keys[group.representative])
                    if let index = Self.lookUp(group, in: name[start..<end]), best.map({ index < $0 }) ?? true { best = index }
                }
            }
        }
        return best
    }

    private static func lookUp(_ group: ShapeGroup, in suffix: ArraySlice<Unicode.Scalar>) -> Int? {
        var literals: [Unicode.Scalar] = []
        literals.reserveCapacity(suffix.count - group.wildcards.count)
        var wildcard = group.wildcards.makeIterator(), nextWildcard = wildcard.next()
        for (offset, scalar) in suffix.enumerated() {
            if offset == nextWildcard {
                if scalar == "\n" { return nil }
                nextWildcard = wildcard.next()
            } else {
                literals.append(scalar)
            }
        }
        return group.firstIndex[utf8(literals)]
    }
}

/// The work all pattern lookups of one adapter config may do together, in
/// steps (a character compared, an automaton state visited; about 10 ns
/// each): far more than any real config needs (a thousand modules against
/// thirty regular expressions and two hundred names take 6 million), small
/// enough that no config stalls a merge for more than a few seconds.
final class PatternBudget: @unchecked Sendable {
    static let defaultSteps = 250_000_000

    struct Exhausted: Error {
        let key: String
    }

    let steps: Int
    private let left: Locked<Int>

    init(steps: Int = PatternBudget.defaultSteps) {
        self.steps = steps
        left = Locked(steps)
    }

    var remaining: Int { left.withLock { $0 } }

    func spend(_ steps: Int, key: String) throws {
        let ok = left.withLock { left -> Bool in
            left -= steps
            return left >= 0
        }
        guard ok else { throw Exhausted(key: key) }
    }
}

extension PatternNode {
    /// The key as characters and `nil` for each `.`, when that is all it is
    /// (a plain module name, possibly with escapes and one-character classes).
    var plainAtoms: [Unicode.Scalar?]? {
        switch self {
        case .scalar(let scalar): return [scalar]
        case .anyButNewline: return [nil]
        case .set(let set): return set.singleScalar.map { [$0] }
        case .sequence(let items):
            var atoms: [Unicode.Scalar?] = []
            for item in items {
                guard let more = item.plainAtoms else { return nil }
                atoms += more
            }
            return atoms
        case .alternation, .repetition, .assertion: return nil
        }
    }
}
