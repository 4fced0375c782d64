/// Serializes `JSONValue`s: compact (safetensors headers, byte-compatible with
/// the reference writers) or indented (reports, indexes, the container header).
public enum JSONWriter {
    public enum Style {
        /// No spaces at all: `{"a":[1,2]}`, as serde_json and the safetensors writers emit.
        case compact
        /// Python's `json.dumps(indent=2)`: two spaces per level, `": "` and `","` at line ends,
        /// everything outside printable ASCII escaped as `\uxxxx`, lower-case hex (Python's default
        /// `ensure_ascii`); except that arrays of numbers, strings, booleans and nulls stay on one line.
        case indented
        /// Exactly Python's `json.dumps(indent=2)` (how transformers writes `config.json`):
        /// as `indented`, but every non-empty array has one item per line.
        case python
    }

    public static func serialize(_ value: JSONValue, style: Style = .compact, sortKeys: Bool = false) -> String {
        serialize(value, style: style, sortKeys: sortKeys, level: 0)
    }

    /// `value` as it is written `level` levels deep in a document (for
    /// documents written a piece at a time).
    static func serialize(_ value: JSONValue, style: Style, sortKeys: Bool = false, level: Int) -> String {
        var out = ""
        write(value, to: &out, style: style, sortKeys: sortKeys, level: level)
        return out
    }

    private static func write(_ value: JSONValue, to out: inout String, style: Style, sortKeys: Bool, level: Int) {
        switch value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += n.text
        case .string(let s): writeString(s, to: &out, asciiOnly: style != .compact)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            if style == .indented && items.allSatisfy(\.isScalar) {
                // Shapes and offsets read best on one line: [256, 128].
                out += "[" + items.map { item -> String in
                    var text = ""
                    write(item, to: &text, style: style, sortKeys: sortKeys, level: level)
                    return text
                }.joined(separator: ", ") + "]"
                return
            }
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                newline(&out, style, level + 1)
                write(item, to: &out, style: style, sortKeys: sortKeys, level: level + 1)
            }
            newline(&out, style, level)
            out += "]"
        case .object(let object):
            if object.members.isEmpty { out += "{}"; return }
            out += "{"
            // Python sorts keys by code point; String's `<` would compare canonical equivalents as equal.
            let members = sortKeys ? object.members.sorted { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) } : object.members
            for (i, member) in members.enumerated() {
                if i > 0 { out += "," }
                newline(&out, style, level + 1)
                writeString(member.key, to: &out, asciiOnly: style != .compact)
                out += style == .compact ? ":" : ": "
                write(member.value, to: &out, style: style, sortKeys: sortKeys, level: level + 1)
            }
            newline(&out, style, level)
            out += "}"
        }
    }

    private static func newline(_ out: inout String, _ style: Style, _ level: Int) {
        guard style != .compact else { return }
        out += "\n"
        out += String(repeating: "  ", count: level)
    }

    /// Escapes like serde_json: quotes, backslashes and control characters only;
    /// everything else is written as UTF-8. With `asciiOnly`, escapes like
    /// Python's `ensure_ascii`: DEL and non-ASCII as `\uxxxx`, UTF-16 surrogate pairs above U+FFFF.
    static func writeString(_ string: String, to out: inout String, asciiOnly: Bool = false) {
        // Most strings (names, dtypes, hex digests) need no escape: appended whole.
        if string.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x22 && $0 != 0x5C && (!asciiOnly || $0 < 0x7F) }) {
            out += "\""
            out += string
            out += "\""
            return
        }
        out += "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20 || (asciiOnly && scalar.value >= 0x7F):
                for unit in String(scalar).utf16 {
                    let hex = String(unit, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                }
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

extension JSONValue {
    /// Not an array or object.
    var isScalar: Bool {
        switch self {
        case .array, .object: return false
        default: return true
        }
    }
}
