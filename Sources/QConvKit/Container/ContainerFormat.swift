/// Constants of the qconv container layout (docs/FORMAT.md).
///
/// ```
/// [0, 8)    magic "QCONVFMT"
/// [8, 12)   u32 format version (1)
/// [12, 16)  u32 flags (0)
/// [16, 24)  u64 header length H
/// [24, 32)  u64 xxHash64 of the H header bytes
/// [32, 32+H) JSON header, padded with spaces so that 32+H is a multiple of 64
/// [32+H, end) data section: parts at 64-byte aligned offsets, zero padding between
/// ```
public enum ContainerFormat {
    public static let magic: [UInt8] = Array("QCONVFMT".utf8)
    public static let version: UInt32 = 1
    public static let prefixLength = 32
    /// Every part starts at a multiple of this, relative to the data section (which itself starts at one).
    public static let alignment = 64
    public static let maximumHeaderLength: UInt64 = 100_000_000
    /// The longest embedded file name (bytes of UTF-8), the usual file-system limit.
    public static let maximumFileNameLength = 255

    /// `value` rounded up to the next multiple of `alignment`.
    public static func aligned(_ value: UInt64) -> UInt64 {
        let a = UInt64(alignment)
        return (value + a - 1) / a * a
    }

    /// `value` as lower-case hex digits, two per byte (`xxh64` fields: 16, `offset_bits`: 8).
    public static func hexString<T: FixedWidthInteger & UnsignedInteger>(_ value: T) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: T.bitWidth / 4 - digits.count) + digits
    }

    /// Reads what `hexString` writes: exactly two lower-case hex digits per byte, nothing else.
    public static func parseHex<T: FixedWidthInteger & UnsignedInteger>(_ text: String, as type: T.Type = T.self) -> T? {
        guard text.utf8.count == T.bitWidth / 4,
              text.utf8.allSatisfy({ ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f")) })
        else { return nil }
        return T(text, radix: 16)
    }

    /// Why `name` cannot be an embedded file's name, or nil when it can.
    ///
    /// `dequant` writes embedded files into its output folder under these
    /// names, beside the weights it writes, so a name must be a plain visible
    /// file name that none of those weight files can have.
    public static func embeddedFileNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "the name is empty" }
        if name.utf8.count > maximumFileNameLength { return "the name is longer than \(maximumFileNameLength) bytes" }
        if name.contains("/") { return "the name contains '/'; it must be a plain file name" }
        if let control = name.unicodeScalars.first(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return control.value == 0 ? "the name contains a NUL byte" : "the name contains the control character U+\(hexString(UInt16(control.value)).uppercased())"
        }
        if name == "." || name == ".." { return "'\(name)' is not a file name" }
        if name.hasPrefix(".") { return "the name starts with '.' (hidden files are not carried)" }
        if name == Checkpoint.singleFileName || name == Checkpoint.indexFileName || isShardFileName(name) {
            return "the name is one of the weight files dequant writes"
        }
        return nil
    }

    /// `model-*-of-*.safetensors`, the names `CheckpointWriter` gives shards.
    static func isShardFileName(_ name: String) -> Bool {
        guard name.hasPrefix("model-"), name.hasSuffix(".safetensors") else { return false }
        let middle = name.dropFirst("model-".count).dropLast(".safetensors".count)
        return middle.contains("-of-")
    }
}

/// How a tensor is stored in a container.
public enum ContainerScheme: String, CaseIterable, Sendable {
    /// The source bytes as they were (non-float tensors, and tensors left unquantized).
    case raw
    /// 4-bit NormalFloat, blockwise, as bitsandbytes.
    case nf4
    /// 4-bit float, blockwise, as bitsandbytes.
    case fp4
    /// Row-wise int8 with FP16 outlier columns (LLM.int8).
    case int8

    /// The codebook of a 4-bit scheme; nil for the others.
    public var fourBitFormat: FourBitFormat? {
        switch self {
        case .nf4: return .nf4
        case .fp4: return .fp4
        case .raw, .int8: return nil
        }
    }
}

extension FourBitFormat {
    /// The container scheme that stores this format.
    public var scheme: ContainerScheme {
        switch self {
        case .nf4: return .nf4
        case .fp4: return .fp4
        }
    }
}

/// One contiguous region of the data section: a part of a tensor, or an embedded file.
public struct ContainerPart: Equatable, Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Relative to the start of the data section.
    public var offset: UInt64
    public var length: UInt64
    /// xxHash64 of the part's bytes.
    public var checksum: UInt64

    public init(name: String, dtype: DType, shape: [Int], offset: UInt64 = 0, length: UInt64 = 0, checksum: UInt64 = 0) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.offset = offset
        self.length = length
        self.checksum = checksum
    }

    /// Bytes its dtype and shape need.
    public var expectedLength: UInt64 {
        UInt64(TensorInfo(name: name, dtype: dtype, shape: shape).byteCount)
    }
}

/// A scheme's parameters, as stored in a tensor's `params`.
public enum SchemeParameters: Equatable, Sendable {
    case raw
    /// `offset` is the double-quantization offset (nil without double quantization).
    case fourBit(blockSize: Int, offset: Float?)
    /// `rule` and `threshold` describe how outlier columns were chosen (informational);
    /// the outlier column count is the length of the `outlier_columns` part.
    case int8(outlierColumnCount: Int, rule: String, threshold: Double?)

    public var isDoubleQuantized: Bool {
        if case .fourBit(_, .some) = self { return true }
        return false
    }
}

/// The parts each scheme stores, in the order they appear in the file.
///
/// The first part is always the bulk of the tensor (`data` or `codes`), read
/// range by range; the others are side data (scales, outlier columns), small
/// enough to be read whole.
public enum ContainerLayout {
    /// The parts (names, dtypes, shapes; offsets left 0) that `tensor` stored with `scheme` has.
    public static func parts(for tensor: TensorInfo, scheme: ContainerScheme, parameters: SchemeParameters) -> [ContainerPart] {
        let n = tensor.elementCount
        switch (scheme, parameters) {
        case (.nf4, .fourBit(let blockSize, let offset)), (.fp4, .fourBit(let blockSize, let offset)):
            let blocks = blockSize > 0 ? (n + blockSize - 1) / blockSize : 0
            var parts = [ContainerPart(name: "codes", dtype: .u8, shape: [(n + 1) / 2])]
            if offset != nil {
                parts.append(ContainerPart(name: "absmax_codes", dtype: .u8, shape: [blocks]))
                let nestedBlocks = (blocks + DoubleQuantization.nestedBlockSize - 1) / DoubleQuantization.nestedBlockSize
                parts.append(ContainerPart(name: "nested_absmax", dtype: .f32, shape: [nestedBlocks]))
            } else {
                parts.append(ContainerPart(name: "absmax", dtype: .f32, shape: [blocks]))
            }
            return parts
        case (.int8, .int8(let k, _, _)):
            let (rows, columns) = tensor.matrixShape
            return [
                ContainerPart(name: "codes", dtype: .i8, shape: [rows, columns]),
                ContainerPart(name: "row_scales", dtype: .f32, shape: [rows]),
                ContainerPart(name: "outlier_columns", dtype: .i32, shape: [k]),
                ContainerPart(name: "outlier_values", dtype: .f16, shape: [rows, k]),
            ]
        default:
            return [ContainerPart(name: "data", dtype: tensor.dtype, shape: tensor.shape)]
        }
    }
}
