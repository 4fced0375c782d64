/// Serializes `JSONValue`s: compact (safetensors headers, byte-compatible with
/// the reference writers) or indented (reports, indexes, the container header).
public enum JSONWriter {
    public enum Style {
        /// No spaces at all: `{"a":[1,2]}`, as serde_json and the safetensors writers emit.
        case compact
        /// Python's `json.dumps(indent=2)`: two spaces per level, `": "` and `","` at line ends.
        case indented
    }

    public static func serialize(_ value: JSONValue, style: Style = .compact, sortKeys: Bool = false) -> String {
        var out = ""
        write(value, to: &out, style: style, sortKeys: sortKeys, level: 0)
        return out
    }

    private static func write(_ value: JSONValue, to out: inout String, style: Style, sortKeys: Bool, level: Int) {
        switch value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += n.text
        case .string(let s): writeString(s, to: &out)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
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
            let members = sortKeys ? object.members.sorted { $0.key < $1.key } : object.members
            for (i, member) in members.enumerated() {
                if i > 0 { out += "," }
                newline(&out, style, level + 1)
                writeString(member.key, to: &out)
                out += style == .compact ? ":" : ": "
                write(member.value, to: &out, style: style, sortKeys: sortKeys, level: level + 1)
            }
            newline(&out, style, level)
            out += "}"
        }
    }

    private static func newline(_ out: inout String, _ style: Style, _ level: Int) {
        guard style == .indented else { return }
        out += "\n"
        out += String(repeating: "  ", count: level)
    }

    /// Escapes like serde_json: quotes, backslashes and control characters only;
    /// everything else is written as UTF-8.
    static func writeString(_ string: String, to out: inout String) {
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
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}
