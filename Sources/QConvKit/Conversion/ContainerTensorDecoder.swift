/// Decodes one tensor of a container back to float32, range by range.
///
/// Creating a decoder checks the checksum of every part of the tensor (the
/// large codes part is streamed through xxHash64 in bounded chunks; with
/// `checkingInOrder`, it is left to the reads, which check it as they pass)
/// and loads and validates the small side data (`SideData`): 4-bit absmax values
/// (undoing double quantization), int8 row scales and outlier columns.
public final class ContainerTensorDecoder: FloatTensorSource {
    /// A tensor's side parts (every part after the first), read whole,
    /// checksum-checked and validated: everything a decoder needs besides the
    /// bulk part, and every rule about part contents that the header cannot
    /// express. `verify CONTAINER` loads it too, so it refuses exactly what
    /// decoding refuses.
    public struct SideData {
        /// 4-bit: one scale per block (double quantization undone).
        public private(set) var absmax: [Float] = []
        /// int8: one scale per row.
        public private(set) var rowScales: [Float] = []
        /// int8: outlier column indices, strictly increasing, each below the column count.
        public private(set) var outlierColumns: [Int] = []
        /// int8: float16 bits, `rows × outlierColumns.count`, plus one trailing 0 so
        /// that pointers into it always have a base address.
        public private(set) var outlierValues: [UInt16] = []

        /// Reads and validates the side parts of `tensor`.
        ///
        /// - Throws: `ContainerError.checksumMismatch` for a damaged part,
        ///   `ContainerError.invalidOutlierColumn` for an outlier column index
        ///   out of range or out of order, `IOError` when reading fails.
        public init(container: ContainerFile, tensor: ContainerHeader.Tensor) throws {
            func part(_ name: String) throws -> [UInt8] {
                // The header validated the parts against the scheme; this only guards that invariant.
                guard let part = tensor.part(name) else {
                    throw ContainerError.wrongParts(file: container.path, tensor: tensor.name, expected: [name], found: tensor.parts.map(\.name))
                }
                return try container.readPart(part, of: tensor.name)
            }
            switch tensor.parameters {
            case .raw:
                break
            case .fourBit(_, let offset):
                if let offset {
                    let codes = try part("absmax_codes")
                    let nested = Self.floats(try part("nested_absmax"))
                    absmax = [Float](repeating: 0, count: codes.count)
                    codes.withUnsafeBufferPointer { codes in
                        nested.withUnsafeBufferPointer { nested in
                            absmax.withUnsafeMutableBufferPointer { absmax in
                                guard let destination = absmax.baseAddress else { return }
                                DoubleQuantization.dequantize(codes: codes, nestedAbsmax: nested, offset: offset, into: destination)
                            }
                        }
                    }
                } else {
                    absmax = Self.floats(try part("absmax"))
                }
            case let .int8(k, _, _):
                rowScales = Self.floats(try part("row_scales"))
                let indices = try part("outlier_columns")
                let columns = tensor.info.matrixShape.columns
                outlierColumns = indices.withUnsafeBytes { raw in
                    (0..<min(k, indices.count / 4)).map { Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self))) }
                }
                for (i, column) in outlierColumns.enumerated() where column < 0 || column >= columns || (i > 0 && column <= outlierColumns[i - 1]) {
                    throw ContainerError.invalidOutlierColumn(file: container.path, tensor: tensor.name, position: i, column: column, columns: columns)
                }
                let values = try part("outlier_values")
                outlierValues = values.withUnsafeBytes { raw in
                    (0..<values.count / 2).map { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) }
                }
                outlierValues.append(0)
            }
        }

        /// Little-endian F32 bytes as floats.
        private static func floats(_ bytes: [UInt8]) -> [Float] {
            var values = [Float](repeating: 0, count: bytes.count / 4)
            bytes.withUnsafeBytes { raw in
                values.withUnsafeMutableBufferPointer { values in
                    guard let source = raw.baseAddress, let destination = values.baseAddress else { return }
                    FloatConversion.decode(source, dtype: .f32, count: values.count, into: destination)
                }
            }
            return values
        }
    }

    public let container: ContainerFile
    public let tensor: ContainerHeader.Tensor
    private let side: SideData

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

    /// The bulk part's checksum as it is being checked in order, by a pipeline
    /// that reads the tensor once (`checkBytes(before:buffer:)`); nil when the
    /// part was checked whole when the decoder was made.
    private var pendingCheck: (hasher: XXHash64, checkedBytes: UInt64)?

    /// Checks the bulk part's checksum (streamed through `buffer`) and loads the side data.
    ///
    /// - Parameters:
    ///   - buffer: scratch for streaming checksums (any size > 0).
    ///   - checkingInOrder: leave the bulk part's checksum to the caller, which
    ///     must call `checkBytes(before:buffer:)` as it consumes the tensor in
    ///     order and `finishChecks(buffer:)` before using the result
    ///     (`dequant`, `verify`): the calling thread hashes the part while the
    ///     workers decode it, instead of in a pass before them (its bytes are
    ///     still read twice, the second time from the page cache). Output
    ///     written from the values meanwhile is discarded when the check fails.
    public init(container: ContainerFile, tensor: ContainerHeader.Tensor, buffer: UnsafeMutableRawBufferPointer,
                checkingInOrder: Bool = false) throws {
        self.container = container
        self.tensor = tensor
        fp4NegativeZero = tensor.scheme == .fp4 && Blockwise4Bit.bitsandbytesDecodesNegativeZero(shape: tensor.info.shape)
        if checkingInOrder {
            pendingCheck = (XXHash64(), 0)
        } else if let bulk = tensor.parts.first {
            try container.verifyChecksum(bulk, of: tensor.name, buffer: buffer)
        }
        side = try SideData(container: container, tensor: tensor)
    }

    /// Bytes of the bulk part that hold the elements before `element`.
    private func bulkBytes(before element: Int) -> UInt64 {
        switch tensor.scheme {
        case .raw: return UInt64(element * (tensor.info.dtype.byteWidth ?? 8))
        case .nf4, .fp4: return UInt64((element + 1) / 2)
        case .int8: return UInt64(element)
        }
    }

    /// With `checkingInOrder`: hashes the bulk part up to the bytes of the
    /// elements before `element` (nothing when checked already).
    public func checkBytes(before element: Int, buffer: UnsafeMutableRawBufferPointer) throws {
        guard var check = pendingCheck, let bulk = tensor.parts.first else { return }
        let end = min(bulk.length, bulkBytes(before: element))
        guard end > check.checkedBytes else { return }
        try container.file.stream(from: container.dataStart + bulk.offset + check.checkedBytes, length: end - check.checkedBytes,
                                  buffer: buffer) { check.hasher.update($0) }
        check.checkedBytes = end
        pendingCheck = check
    }

    /// With `checkingInOrder`: hashes the rest of the bulk part and throws
    /// `ContainerError.checksumMismatch` when it is damaged.
    public func finishChecks(buffer: UnsafeMutableRawBufferPointer) throws {
        guard let bulk = tensor.parts.first else { return }
        try checkBytes(before: tensor.info.elementCount, buffer: buffer)
        guard let check = pendingCheck else { return }
        let actual = check.hasher.digest()
        guard actual == bulk.checksum else { throw container.checksumError(bulk, tensor: tensor.name, actual: actual) }
        pendingCheck = nil
    }

    public func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        precondition(range.lowerBound % alignment == 0, "unaligned decode range")
        guard !range.isEmpty else { return }
        switch tensor.parameters {
        case .raw:
            try container.stored(tensor.parts[0], of: tensor.name).readFloats(range, into: destination, scratch: scratch)
        case let .fourBit(blockSize, _):
            guard let format = tensor.scheme.fourBitFormat else {
                preconditionFailure("\(tensor.name): the header parser gives 4-bit parameters only to a 4-bit scheme")
            }
            let codes = container.stored(tensor.parts[0], of: tensor.name)
            let byteRange = range.lowerBound / 2..<(range.upperBound + 1) / 2
            let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<byteRange.count])
            try codes.readBytes(at: byteRange.lowerBound, into: raw)
            side.absmax.withUnsafeBufferPointer { absmax in
                Blockwise4Bit.dequantize(packed: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: range.count,
                                         blockSize: blockSize, format: format,
                                         absmax: absmax.baseAddress! + range.lowerBound / blockSize, into: destination,
                                         fp4NegativeZero: fp4NegativeZero)
            }
        case .int8:
            let columns = tensor.info.matrixShape.columns
            let rows = range.lowerBound / columns..<(range.upperBound + columns - 1) / columns
            let codes = container.stored(tensor.parts[0], of: tensor.name)
            let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<range.count])
            try codes.readBytes(at: range.lowerBound, into: raw)
            let k = side.outlierColumns.count
            side.rowScales.withUnsafeBufferPointer { scales in
                side.outlierValues.withUnsafeBufferPointer { values in
                    Int8Vectorwise.dequantize(codes: UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: Int8.self), count: range.count),
                                              rowScales: UnsafeBufferPointer(rebasing: scales[rows]), rowCount: rows.count, columns: columns,
                                              outlierColumns: side.outlierColumns,
                                              outlierValues: UnsafeBufferPointer(start: values.baseAddress! + rows.lowerBound * k, count: rows.count * k),
                                              into: UnsafeMutableBufferPointer(start: destination, count: range.count))
                }
            }
        }
    }
}
