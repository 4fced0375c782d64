/// Decodes one tensor of a container back to float32, range by range.
///
/// Creating a decoder checks the checksum of every part of the tensor (the
/// large codes part is streamed through xxHash64 in bounded chunks) and loads
/// the small side data: 4-bit absmax values (undoing double quantization),
/// int8 row scales and outlier columns.
public final class ContainerTensorDecoder: FloatTensorSource {
    public let container: ContainerFile
    public let tensor: ContainerHeader.Tensor
    private var absmax: [Float] = []
    private var rowScales: [Float] = []
    private var outlierColumns: [Int] = []
    private var outlierValues: [UInt16] = []

    public var info: TensorInfo { tensor.info }
    /// bitsandbytes' CPU kernel decodes FP4's zero code as -0.0 for these shapes; qconv does the same.
    private let fp4NegativeZero: Bool

    public var alignment: Int {
        switch tensor.parameters {
        case .fourBit(let blockSize, _): return blockSize
        case .int8: return max(1, tensor.info.matrixShape.columns)
        case .raw: return 1
        }
    }

    public func scratchBytes(for count: Int) -> Int {
        switch tensor.scheme {
        case .raw: return count * (tensor.info.dtype.byteWidth ?? 8)
        case .nf4, .fp4: return count / 2 + 1
        case .int8: return count
        }
    }

    /// - Parameter buffer: scratch for streaming checksums (any size > 0).
    public init(container: ContainerFile, tensor: ContainerHeader.Tensor, buffer: UnsafeMutableRawBufferPointer) throws {
        self.container = container
        self.tensor = tensor
        fp4NegativeZero = tensor.scheme == .fp4 && Blockwise4Bit.bitsandbytesDecodesNegativeZero(shape: tensor.info.shape)
        let name = tensor.name
        for part in tensor.parts { try container.verifyChecksum(part, of: name, buffer: buffer) }
        switch tensor.parameters {
        case .raw:
            guard tensor.info.dtype.isDecodableToFloat else { return }
        case .fourBit(_, let offset):
            if let offset {
                let codes = try part("absmax_codes")
                let nested = floats(try part("nested_absmax"))
                absmax = [Float](repeating: 0, count: codes.count)
                codes.withUnsafeBufferPointer { codes in
                    nested.withUnsafeBufferPointer { nested in
                        absmax.withUnsafeMutableBufferPointer { absmax in
                            DoubleQuantization.dequantize(codes: codes, nestedAbsmax: nested, offset: offset, into: absmax.baseAddress!)
                        }
                    }
                }
            } else {
                absmax = floats(try part("absmax"))
            }
        case let .int8(k, _, _):
            rowScales = floats(try part("row_scales"))
            let indices = try part("outlier_columns")
            let columns = tensor.info.matrixShape.columns
            outlierColumns = indices.withUnsafeBytes { raw in
                (0..<k).map { Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self))) }
            }
            for (i, column) in outlierColumns.enumerated() where column < 0 || column >= columns || (i > 0 && column <= outlierColumns[i - 1]) {
                throw ContainerError.invalidParameter(file: container.path, tensor: name, parameter: "outlier_columns",
                                                      reason: "must be increasing column indices below \(columns), found \(column)")
            }
            let values = try part("outlier_values")
            outlierValues = values.withUnsafeBytes { raw in
                (0..<values.count / 2).map { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) }
            }
            // Never empty, so that buffer pointers into it always have a base address.
            outlierValues.append(0)
        }
    }

    /// A part's bytes, checksum-checked; its presence was validated with the header.
    private func part(_ name: String) throws -> [UInt8] {
        guard let part = tensor.part(name) else {
            throw ContainerError.wrongParts(file: container.path, tensor: tensor.name, expected: [name], found: tensor.parts.map(\.name))
        }
        return try container.readPart(part, of: tensor.name)
    }

    private func floats(_ bytes: [UInt8]) -> [Float] {
        bytes.withUnsafeBytes { raw in (0..<bytes.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) } }
    }

    public func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        precondition(range.lowerBound % alignment == 0, "unaligned decode range")
        switch tensor.parameters {
        case .raw:
            try container.stored(tensor.parts[0], of: tensor.name).readFloats(range, into: destination, scratch: scratch)
        case let .fourBit(blockSize, _):
            let codes = container.stored(tensor.parts[0], of: tensor.name)
            let byteRange = range.lowerBound / 2..<(range.upperBound + 1) / 2
            let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<byteRange.count])
            try codes.readBytes(at: byteRange.lowerBound, into: raw)
            absmax.withUnsafeBufferPointer { absmax in
                Blockwise4Bit.dequantize(packed: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: range.count,
                                         blockSize: blockSize, format: tensor.scheme == .nf4 ? .nf4 : .fp4,
                                         absmax: absmax.baseAddress! + range.lowerBound / blockSize, into: destination,
                                         fp4NegativeZero: fp4NegativeZero)
            }
        case .int8:
            let columns = tensor.info.matrixShape.columns
            let rows = range.lowerBound / columns..<(range.upperBound + columns - 1) / columns
            let codes = container.stored(tensor.parts[0], of: tensor.name)
            let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<range.count])
            try codes.readBytes(at: range.lowerBound, into: raw)
            let k = outlierColumns.count
            rowScales.withUnsafeBufferPointer { scales in
                outlierValues.withUnsafeBufferPointer { values in
                    Int8Vectorwise.dequantize(codes: UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: Int8.self), count: range.count),
                                              rowScales: UnsafeBufferPointer(rebasing: scales[rows]), rowCount: rows.count, columns: columns,
                                              outlierColumns: outlierColumns,
                                              outlierValues: UnsafeBufferPointer(start: values.baseAddress! + rows.lowerBound * k, count: rows.count * k),
                                              into: UnsafeMutableBufferPointer(start: destination, count: range.count))
                }
            }
        }
    }
}
