// rank_pattern / alpha_pattern keys and module names (text: keys one per
// line, a blank line, names one per line). Besides not crashing or hanging,
// the two matchers must agree: a plain key's index lookup and its automaton
// give the same answer for every name, and the first match of all keys
// together is the first key that matches alone.
@testable import QConvKit

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let sections = text.split(separator: "\n\n", maxSplits: 1, omittingEmptySubsequences: false)
    let keys = sections[0].split(separator: "\n", omittingEmptySubsequences: false).prefix(8).map(String.init)
    let names = sections.count > 1 ? sections[1].split(separator: "\n", omittingEmptySubsequences: false).prefix(8).map(String.init) : ["a", "a.b"]
    let budget = PatternBudget(steps: 5_000_000)
    var singles: [ModulePatterns?] = []
    for key in keys {
        let single = try? ModulePatterns(field: "rank_pattern", keys: [key]) { _, problem in problem }
        singles.append(single)
        let pattern = PatternProgram.pythonPattern(for: key)
        guard let single, let program = try? PatternProgram(try PatternParser.parse(pattern.text, key: pattern.key)) else { continue }
        for name in names {
            var steps = 0
            guard let automaton = program.matches(Array(name.unicodeScalars), steps: &steps, limit: 5_000_000),
                  let indexed = try? single.firstMatch(name, budget: budget) else { return 0 }
            if automaton != (indexed == 0) { fatalError("key \(key.debugDescription), name \(name.debugDescription): automaton \(automaton), lookup \(indexed as Any)") }
        }
    }
    guard !keys.isEmpty, singles.allSatisfy({ $0 != nil }), Set(keys).count == keys.count,
          let all = try? ModulePatterns(field: "rank_pattern", keys: keys, problem: { _, problem in problem }) else { return 0 }
    for name in names {
        guard let together = try? all.firstMatch(name, budget: budget) else { return 0 }
        var alone: Int?
        for (index, single) in singles.enumerated() {
            guard let found = try? single!.firstMatch(name, budget: budget) else { return 0 }
            if found != nil { alone = index; break }
        }
        if together != alone { fatalError("keys \(keys), name \(name.debugDescription): together \(together as Any), alone \(alone as Any)") }
    }
    return 0
}
