/// "Did you mean": the candidates closest to a misspelled word.
public enum Suggestions {
    /// The candidates nearest to `word`, if within a small edit distance (a
    /// third of its length, at least 1, at most 3); or those `word` is a
    /// prefix of, when none is that close.
    public static func closest(to word: String, among candidates: [String], limit: Int = 3) -> [String] {
        let target = Array(word.lowercased())
        let allowed = max(1, min(3, target.count / 3))
        let scored = candidates.map { (candidate: $0, distance: distance(target, Array($0.lowercased()))) }
            .filter { $0.distance <= allowed }
            .sorted { $0.distance != $1.distance ? $0.distance < $1.distance : $0.candidate < $1.candidate }
        if let best = scored.first?.distance { return Array(scored.prefix { $0.distance == best }.prefix(limit).map(\.candidate)) }
        return Array(candidates.filter { $0.lowercased().hasPrefix(word.lowercased()) && word.count >= 3 }.prefix(limit))
    }

    /// " (did you mean --block-size?)", or "" when nothing is close.
    public static func hint(for word: String, among candidates: [String]) -> String {
        let close = closest(to: word, among: candidates)
        guard !close.isEmpty else { return "" }
        return " (did you mean \(close.joined(separator: " or "))?)"
    }

    /// Levenshtein distance, with a transposition of neighbours counted as one edit.
    static func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous2 = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { current[j] = min(current[j], previous2[j - 2] + 1) }
            }
            (previous2, previous, current) = (previous, current, previous2)
        }
        return previous[b.count]
    }
}
