import QConvKit

/// The text report of `to-nf4`, `to-fp4` and `to-int8`.
enum ConversionText {
    static func report(_ report: ConversionReport) -> String {
        var method = report.method.schemeName
        switch report.method {
        case let .fourBit(_, blockSize, doubleQuant): method += ", block size \(blockSize)" + (doubleQuant ? ", double quant" : "")
        case let .int8(outliers): method += ", outliers: \(outliers)"
        }
        let quantized = report.quantized
        var rows: [[String]] = [
            ["wrote", report.output],
            ["method", method],
            ["tensors", "\(report.tensors.count) (\(quantized.count) quantized, \(report.tensors.count - quantized.count) kept as they were)"],
            ["parameters", "\(Format.grouped(report.quantizedParameterCount)) quantized of \(Format.grouped(report.parameterCount))"],
            // Tensor data on both sides, as `inspect` counts it; the files add headers and side files.
            ["size", "\(Format.bytes(report.sourceTensorBytes)) -> \(Format.bytes(report.storedTensorBytes)) of tensor data "
                + "(\(Format.fixed(report.sourceTensorBytes > 0 ? Double(report.storedTensorBytes) * 100 / Double(report.sourceTensorBytes) : 0, 1))%), "
                + "\(Format.bytes(report.outputBytes)) on disk"],
            ["bits/weight", "\(Format.fixed(report.quantizedBitsPerWeight, 3)) over quantized tensors"],
        ]
        if case .int8 = report.method {
            let counts = report.outlierColumnCounts
            rows.append(["outliers", "\(counts.outliers) of \(counts.columns) columns kept in FP16"])
        }
        if !report.embeddedFiles.isEmpty { rows.append(["files", report.embeddedFiles.joined(separator: ", ")]) }
        rows.append(["time", "\(Format.fixed(report.seconds, 2)) s"])
        return Format.table(rows)
    }
}
