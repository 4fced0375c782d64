/// Python's text for a float: `repr(x)` as `json.dumps` writes it (the
/// quant-state blobs of bitsandbytes checkpoints, configs written by
/// transformers).
///
/// The digits are the shortest that read back as the same Double (Swift's
/// `description` computes exactly those, as Python's `repr` does); only the
/// layout differs: Python writes fixed notation while the decimal exponent
/// is in [-4, 16) and exponent notation with at least two exponent digits
/// otherwise (`1e-05`, `1e+16`, `1.5e+300`), always with a `.0` for whole
/// numbers in fixed notation (`10000.0`). `json.dumps` writes NaN and the
/// infinities as `NaN`, `Infinity` and `-Infinity`.
public enum PythonFloat {
    /// `json.dumps(float(value))`.
    public static func text(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
        let sign = value.sign == .minus ? "-" : ""
        guard value != 0 else { return sign + "0.0" }
        let (digits, point) = shortestDigits(of: value.magnitude)
        return sign + layout(digits: digits, point: point)
    }

    /// The shortest round-trip digits of a positive finite value, without
    /// leading or trailing zeros, and the position of the decimal point:
    /// value = 0.DIGITS x 10^point.
    static func shortestDigits(of value: Double) -> (digits: [UInt8], point: Int) {
        let text = value.description
        var mantissa = Substring(text)
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = text[..<e]
            exponent = Int(text[text.index(after: e)...]) ?? 0
        }
        var digits: [UInt8] = []
        var point = 0
        var seenPoint = false
        for character in mantissa.utf8 {
            if character == UInt8(ascii: ".") { seenPoint = true; continue }
            digits.append(character - UInt8(ascii: "0"))
            if !seenPoint { point += 1 }
        }
        point += exponent
        while let first = digits.first, first == 0 { digits.removeFirst(); point -= 1 }
        while let last = digits.last, last == 0 { digits.removeLast() }
        return (digits, point)
    }

    /// Python's `float_repr_style = 'short'` layout of the digits.
    static func layout(digits: [UInt8], point: Int) -> String {
        let text = String(decoding: digits.map { $0 + UInt8(ascii: "0") }, as: UTF8.self)
        if point <= -4 || point > 16 {
            let exponent = point - 1
            let magnitude = String(abs(exponent))
            let mantissa = digits.count > 1 ? String(text.prefix(1)) + "." + String(text.dropFirst()) : text
            return mantissa + "e" + (exponent < 0 ? "-" : "+") + (magnitude.count < 2 ? "0" : "") + magnitude
        }
        if point <= 0 { return "0." + String(repeating: "0", count: -point) + text }
        if point >= digits.count { return text + String(repeating: "0", count: point - digits.count) + ".0" }
        return String(text.prefix(point)) + "." + String(text.dropFirst(point))
    }
}

extension JSONNumber {
    /// The number as Python's `json.dumps` writes a float.
    public init(python value: Double) {
        self.init(text: PythonFloat.text(value))
    }
}
