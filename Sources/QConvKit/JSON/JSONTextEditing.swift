/// Edits of a JSON document's text that keep everything else byte for byte
/// (indentation, key order, number spellings): how a merge changes one
/// member of a config.json without rewriting the file.
public enum JSONTextEditing {
    /// `text` with the value of every top-level member named `key` replaced
    /// by `replacement` (JSON text), or nil when `text` is not a JSON object
    /// with such a member. `text` must be valid JSON (parse it first).
    public static func replacingTopLevelValues(of key: String, in text: [UInt8], with replacement: String) -> [UInt8]? {
        var scanner = Scanner(bytes: text)
        guard let ranges = scanner.topLevelValueRanges(of: Array(key.utf8)), !ranges.isEmpty else { return nil }
        var result = text
        for range in ranges.reversed() { result.replaceSubrange(range, with: Array(replacement.utf8)) }
        return result
    }

    /// A forward scan of valid JSON that skips values without building them.
    private struct Scanner {
        let bytes: [UInt8]
        var index = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        private mutating func skipWhitespace() {
            while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
        }

        /// The raw bytes between the quotes of the string at `index` (escapes left as they are).
        private mutating func string() -> ArraySlice<UInt8> {
            let start = index + 1
            index += 1
            while let byte = current, byte != 0x22 { index += byte == 0x5C ? 2 : 1 }
            defer { index += 1 }
            return bytes[start..<min(index, bytes.count)]
        }

        private mutating func skipValue() {
            guard let first = current else { return }
            switch first {
            case 0x22:
                _ = string()
            case 0x7B, 0x5B:
                var depth = 0
                while let byte = current {
                    if byte == 0x22 { _ = string(); continue }
                    if byte == 0x7B || byte == 0x5B { depth += 1 }
                    if byte == 0x7D || byte == 0x5D { depth -= 1 }
                    index += 1
                    if depth == 0 { return }
                }
            default:
                while let byte = current, ![0x2C, 0x7D, 0x5D, 0x20, 0x0A, 0x0D, 0x09].contains(byte) { index += 1 }
            }
        }

        mutating func topLevelValueRanges(of key: [UInt8]) -> [Range<Int>]? {
            skipWhitespace()
            guard current == 0x7B else { return nil }
            index += 1
            var ranges: [Range<Int>] = []
            while true {
                skipWhitespace()
                guard current == 0x22 else { return ranges }
                let name = string()
                skipWhitespace()
                guard current == 0x3A else { return nil }
                index += 1
                skipWhitespace()
                let start = index
                skipValue()
                if Array(name) == key { ranges.append(start..<index) }
                skipWhitespace()
                guard current == 0x2C else { return ranges }
                index += 1
            }
        }
    }
}
