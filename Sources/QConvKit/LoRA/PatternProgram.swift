/// PEFT's test `re.match(rf"(.*\.)?({key})$", name)` compiled: a Thompson
/// automaton run on the name one character at a time with the set of its
/// live states (Pike's method, without captures, which the test does not
/// use). Every character costs at most one visit per instruction, so a match
/// takes time proportional to the name's length times the program's,
/// whatever the pattern: there is no backtracking to blow up.
struct PatternProgram {
    enum Instruction: Equatable {
        case scalar(Unicode.Scalar)
        case anyButNewline
        /// Index into `sets`.
        case set(Int)
        /// Continue at both.
        case split(Int, Int)
        case jump(Int)
        case assertion(PatternAssertion)
        case match
    }

    /// Programs longer than this are refused (a `{m,n}` copies its operand).
    static let maximumLength = 20_000

    private(set) var instructions: [Instruction] = []
    private var sets: [ScalarSet] = []

    /// PEFT's whole pattern for `key`, as Python builds it (the key is pasted
    /// into it, so a key with a stray `)` changes its structure there too).
    static func pythonPattern(for key: String) -> (text: String, key: Range<Int>) {
        let prefix = "(.*\\.)?("
        let start = prefix.unicodeScalars.count
        return (prefix + key + ")$", start..<(start + key.unicodeScalars.count))
    }

    /// Compiles `node` for `re.match`: anchored at the start, done as soon as
    /// the pattern is (the `$` in `pythonPattern` asks for the end).
    init(_ node: PatternNode) throws {
        try compile(node)
        emit(.match)
    }

    @discardableResult
    private mutating func emit(_ instruction: Instruction) -> Int {
        instructions.append(instruction)
        return instructions.count - 1
    }

    private mutating func compile(_ node: PatternNode) throws {
        guard instructions.count < Self.maximumLength else { throw PatternProblem.unsupported("a pattern longer than \(Self.maximumLength) steps once its repeats are expanded") }
        switch node {
        case .scalar(let scalar): emit(.scalar(scalar))
        case .anyButNewline: emit(.anyButNewline)
        case .set(let set):
            sets.append(set)
            emit(.set(sets.count - 1))
        case .sequence(let items):
            for item in items { try compile(item) }
        case .alternation(let branches):
            // split L1, next; L1: branch; jump end; next: split L2, ...; last branch.
            var jumpsToEnd: [Int] = []
            for (i, branch) in branches.enumerated() {
                if i == branches.count - 1 {
                    try compile(branch)
                } else {
                    let split = emit(.split(instructions.count + 1, 0))
                    try compile(branch)
                    jumpsToEnd.append(emit(.jump(0)))
                    instructions[split] = .split(split + 1, instructions.count)
                }
            }
            for jump in jumpsToEnd { instructions[jump] = .jump(instructions.count) }
        case let .repetition(operand, min, max):
            for _ in 0..<min { try compile(operand) }
            if let max {
                // Each optional copy may end the repetition.
                var exits: [Int] = []
                for _ in min..<max {
                    exits.append(emit(.split(instructions.count + 1, 0)))
                    try compile(operand)
                }
                for exit in exits { instructions[exit] = .split(exit + 1, instructions.count) }
            } else {
                let loop = emit(.split(instructions.count + 1, 0))
                try compile(operand)
                emit(.jump(loop))
                instructions[loop] = .split(loop + 1, instructions.count)
            }
        case .assertion(let assertion): emit(.assertion(assertion))
        }
    }

    /// Whether the program matches `name` (its scalars). `steps` counts the
    /// work done; once it passes `limit` the run stops with nil.
    func matches(_ name: [Unicode.Scalar], steps: inout Int, limit: Int) -> Bool? {
        var run = PatternRun(program: self, name: name)
        var current: [Int] = [], next: [Int] = []
        if run.addThreads(from: 0, at: 0, into: &current) { return true }
        for position in 0..<name.count {
            next.removeAll(keepingCapacity: true)
            for pc in current where consumes(instructions[pc], name[position]) {
                if run.addThreads(from: pc + 1, at: position + 1, into: &next) {
                    steps += run.steps
                    return true
                }
            }
            run.steps += current.count
            if next.isEmpty { break }
            swap(&current, &next)
            if steps + run.steps > limit {
                steps += run.steps
                return nil
            }
        }
        steps += run.steps
        return false
    }

    private func consumes(_ instruction: Instruction, _ scalar: Unicode.Scalar) -> Bool {
        switch instruction {
        case .scalar(let expected): return scalar == expected
        case .anyButNewline: return scalar != "\n"
        case .set(let index): return sets[index].contains(scalar)
        case .split, .jump, .assertion, .match: return false
        }
    }

    fileprivate func holds(_ assertion: PatternAssertion, at position: Int, in name: [Unicode.Scalar]) -> Bool {
        switch assertion {
        case .start: return position == 0
        case .end: return position == name.count
        case .endOrFinalNewline: return position == name.count || (position == name.count - 1 && name[position] == "\n")
        case .wordBoundary(let wanted):
            let before = position > 0 && ScalarCategory.isWord(name[position - 1])
            let after = position < name.count && ScalarCategory.isWord(name[position])
            return (before != after) == wanted
        }
    }
}

/// The state of one run: which instructions are already in the list being
/// built (stamped with the position, so nothing is cleared between steps).
private struct PatternRun {
    let program: PatternProgram
    let name: [Unicode.Scalar]
    var stamp: [Int]
    var stack: [Int] = []
    var steps = 0

    init(program: PatternProgram, name: [Unicode.Scalar]) {
        self.program = program
        self.name = name
        stamp = [Int](repeating: -1, count: program.instructions.count)
    }

    /// Adds the instructions reachable from `pc` without consuming a
    /// character to `list`; true when that reaches `match`.
    mutating func addThreads(from pc: Int, at position: Int, into list: inout [Int]) -> Bool {
        stack.append(pc)
        while let pc = stack.popLast() {
            guard stamp[pc] != position else { continue }
            stamp[pc] = position
            steps += 1
            switch program.instructions[pc] {
            case .jump(let target): stack.append(target)
            case let .split(first, second):
                stack.append(second)
                stack.append(first)
            case .assertion(let assertion):
                if program.holds(assertion, at: position, in: name) { stack.append(pc + 1) }
            case .match:
                stack.removeAll()
                return true
            case .scalar, .anyButNewline, .set:
                list.append(pc)
            }
        }
        return false
    }
}
