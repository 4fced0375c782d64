import Glibc
import QConvKit

/// Formatting shared by the text reports.
enum Format {
    /// 22713728 -> "22,713,728".
    static func grouped<T: BinaryInteger>(_ value: T) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (value < 0 ? "-" : "") + out
    }

    /// Bytes in decimal units: "1.57 MB".
    static func bytes(_ value: UInt64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var amount = Double(value)
        var unit = 0
        while amount >= 1000 && unit < units.count - 1 { amount /= 1000; unit += 1 }
        return unit == 0 ? "\(value) B" : fixed(amount, 2) + " " + units[unit]
    }

    static func fixed(_ value: Double, _ decimals: Int) -> String {
        guard value.isFinite else { return "\(value)" }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let rounded = (abs(value) * scale).rounded()
        var integer = String(Int64(rounded / scale))
        var fraction = String(Int64(rounded.truncatingRemainder(dividingBy: scale)))
        fraction = String(repeating: "0", count: max(0, decimals - fraction.count)) + fraction
        if value < 0 && rounded > 0 { integer = "-" + integer }
        return decimals > 0 ? integer + "." + fraction : integer
    }

    /// A compact scientific-or-fixed rendering for statistics columns.
    static func number(_ value: Double) -> String {
        guard value.isFinite else { return "\(value)" }
        if value != 0 && (abs(value) < 1e-3 || abs(value) >= 1e5) {
            return cString("%.4e", value)
        }
        return cString("%.6f", value)
    }

    /// Six significant digits: "0.0919588", "1.5e-07", "inf".
    static func significant(_ value: Double) -> String { VerificationThresholds.significant(value) }

    static func cString(_ format: String, _ value: Double) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        _ = withVaList([value]) { vsnprintf(&buffer, buffer.count, format, $0) }
        return String(cString: buffer)
    }

    /// Left-aligned columns separated by two spaces.
    static func table(_ rows: [[String]], rightAligned: Set<Int> = []) -> String {
        guard let width = rows.map(\.count).max() else { return "" }
        var widths = [Int](repeating: 0, count: width)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                if i == row.count - 1 && !rightAligned.contains(i) { return cell }
                return rightAligned.contains(i) ? pad + cell : cell + pad
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
