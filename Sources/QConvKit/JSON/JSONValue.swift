/// A JSON document as parsed, keeping what a validator needs and Foundation's
/// `JSONSerialization` loses: the order of object members, duplicate keys, and
/// the exact text of every number (so a u64 offset is never rounded through a
/// Double).
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public var objectValue: JSONObject? { if case .object(let o) = self { return o } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var numberValue: JSONNumber? { if case .number(let n) = self { return n } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }

    /// A short name of the value's kind for error messages ("a string", "an array").
    public var kindDescription: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A JSON number kept as its source text.
public struct JSONNumber: Equatable, Sendable, CustomStringConvertible {
    public let text: String

    public init(text: String) { self.text = text }
    public init(_ value: Int) { text = String(value) }
    public init(_ value: UInt64) { text = String(value) }
    /// Shortest text that reads back as the same Double; non-finite values are not JSON.
    public init(_ value: Double) {
        precondition(value.isFinite, "JSON has no representation for \(value)")
        text = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : "\(value)"
    }
    public init(_ value: Float) {
        precondition(value.isFinite, "JSON has no representation for \(value)")
        text = "\(value)"
    }

    public var description: String { text }

    /// True for text made of digits only, with an optional leading minus.
    public var isInteger: Bool {
        let digits = text.hasPrefix("-") ? text.dropFirst() : Substring(text)
        return !digits.isEmpty && digits.allSatisfy { $0 >= "0" && $0 <= "9" }
    }

    public var isNegative: Bool { text.hasPrefix("-") && text.contains(where: { $0 >= "1" && $0 <= "9" }) }

    /// The value as an unsigned 64-bit integer, or nil if it is not one exactly.
    public var uint64Value: UInt64? { isInteger ? UInt64(text) : nil }
    public var intValue: Int? { isInteger ? Int(text) : nil }
    public var doubleValue: Double? { Double(text) }
}

/// A JSON object's members, in document order, duplicates included.
public struct JSONObject: Equatable, Sendable {
    public var members: [(key: String, value: JSONValue)]

    public init(_ members: [(key: String, value: JSONValue)] = []) { self.members = members }

    /// The first member named `key` (objects that matter are validated for
    /// duplicates separately).
    public subscript(key: String) -> JSONValue? {
        members.first(where: { $0.key == key })?.value
    }

    public var keys: [String] { members.map(\.key) }

    public mutating func append(_ key: String, _ value: JSONValue) { members.append((key, value)) }

    /// A report's row for one tensor, opened with what names it (`"name"`,
    /// `"dtype"`, `"shape"`), the same in every report; each appends the rest.
    static func tensorRow(name: String, dtype: String, shape: [Int]) -> JSONObject {
        JSONObject([("name", .string(name)), ("dtype", .string(dtype)), ("shape", .array(shape.map { .int($0) }))])
    }

    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        a.members.count == b.members.count && zip(a.members, b.members).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByNilLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(JSONNumber(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(nilLiteral: ()) { self = .null }

    public static func int(_ value: Int) -> JSONValue { .number(JSONNumber(value)) }
    public static func uint(_ value: UInt64) -> JSONValue { .number(JSONNumber(value)) }
    /// A Double, or null when it is not finite (JSON has no NaN or infinity).
    public static func double(_ value: Double) -> JSONValue { value.isFinite ? .number(JSONNumber(value)) : .null }
    public static func float(_ value: Float) -> JSONValue { value.isFinite ? .number(JSONNumber(value)) : .null }
    public static func object(_ members: KeyValuePairs<String, JSONValue>) -> JSONValue {
        .object(JSONObject(members.map { ($0.key, $0.value) }))
    }
}
