/// What the help says about one option, and how the parser reads it.
public struct OptionSpec: Hashable, Sendable {
    /// The long name with its dashes, e.g. "--block-size".
    public let name: String
    /// The placeholder for the value ("N"), or nil for a flag.
    public let valueName: String?
    public let help: String
    /// Given several times, each value kept (a flag may always be repeated).
    public let repeatable: Bool
}

/// An option without a value: present or not.
public struct Flag: Sendable {
    public let spec: OptionSpec

    public init(_ name: String, _ help: String) {
        spec = OptionSpec(name: name, valueName: nil, help: help, repeatable: false)
    }
}

/// An option with a value of type `Value`, read from its text by `read`
/// (nil for text it does not accept, which is a usage error naming `expected`).
public struct Option<Value>: Sendable {
    public let spec: OptionSpec
    /// What a valid value looks like, for the error ("an integer in 1...1024").
    public let expected: String
    let read: @Sendable (String) -> Value?

    public init(_ name: String, _ valueName: String, _ help: String, repeatable: Bool = false, expected: String,
                read: @escaping @Sendable (String) -> Value?) {
        spec = OptionSpec(name: name, valueName: valueName, help: help, repeatable: repeatable)
        self.expected = expected
        self.read = read
    }
}

extension Option where Value == String {
    /// Any text.
    public init(_ name: String, _ valueName: String, _ help: String, repeatable: Bool = false) {
        self.init(name, valueName, help, repeatable: repeatable, expected: "a value") { $0 }
    }
}

extension Option where Value == Int {
    /// An integer in `range`.
    public init(_ name: String, _ valueName: String, _ help: String, in range: ClosedRange<Int>) {
        self.init(name, valueName, help, expected: "an integer in \(range.lowerBound)...\(range.upperBound)") { text in
            Int(text).flatMap { range.contains($0) ? $0 : nil }
        }
    }
}

extension Option where Value == Double {
    /// A finite number (`allowing` says which: `>= 0`, ...).
    public init(_ name: String, _ valueName: String, _ help: String, expected: String = "a number",
                allowing accepts: @escaping @Sendable (Double) -> Bool = { _ in true }) {
        self.init(name, valueName, help, expected: expected) { text in
            Double(text).flatMap { $0.isFinite && accepts($0) ? $0 : nil }
        }
    }
}

/// "5GB" -> 5_000_000_000 (decimal, as transformers), "2GiB" -> 2 * 2^30,
/// "1024" -> 1024; nil for anything else.
public func parseByteSize(_ text: String) -> UInt64? {
    let units: [(String, UInt64)] = [("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("TIB", 1 << 40),
                                     ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000), ("B", 1)]
    let upper = text.uppercased()
    for (suffix, scale) in units where upper.hasSuffix(suffix) {
        guard let number = Double(upper.dropLast(suffix.count)), number >= 0 else { return nil }
        let value = number * Double(scale)
        return value < 1.8e19 ? UInt64(value) : nil
    }
    return UInt64(text)
}
