/// The element types of safetensors files, named as they are in headers.
///
/// Every dtype can be listed and copied; `f32`, `f16`, `bf16`, `f64` and the
/// two float8 types of FP8 checkpoints (`f8e4m3`, `f8e5m2`) can be decoded to
/// Float (see `FloatConversion`). The other small types (F4, F6_E2M3,
/// F6_E3M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ), integers, booleans and C64
/// are not: they are copied as they are, never quantized or compared by value.
public enum DType: String, CaseIterable, Sendable {
    case f4 = "F4"
    case f6e2m3 = "F6_E2M3"
    case f6e3m2 = "F6_E3M2"
    case bool = "BOOL"
    case u8 = "U8"
    case i8 = "I8"
    case f8e5m2 = "F8_E5M2"
    case f8e4m3 = "F8_E4M3"
    case f8e8m0 = "F8_E8M0"
    case f8e4m3fnuz = "F8_E4M3FNUZ"
    case f8e5m2fnuz = "F8_E5M2FNUZ"
    case i16 = "I16"
    case u16 = "U16"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case u32 = "U32"
    case f32 = "F32"
    case i64 = "I64"
    case u64 = "U64"
    case f64 = "F64"
    case c64 = "C64"

    /// Bits per element.
    public var bitWidth: Int {
        switch self {
        case .f4: return 4
        case .f6e2m3, .f6e3m2: return 6
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz: return 8
        case .i16, .u16, .f16, .bf16: return 16
        case .i32, .u32, .f32: return 32
        case .i64, .u64, .f64, .c64: return 64
        }
    }

    /// Whole bytes per element, for dtypes of at least 8 bits.
    public var byteWidth: Int? { bitWidth % 8 == 0 ? bitWidth / 8 : nil }

    /// Types qconv can decode to float32 (and so quantize, compare and merge).
    public var isDecodableToFloat: Bool {
        switch self {
        case .f32, .f16, .bf16, .f64, .f8e4m3, .f8e5m2: return true
        case .f4, .f6e2m3, .f6e3m2, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz, .bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64, .c64: return false
        }
    }

    /// Types qconv can write from float32 (dequantized and merged outputs).
    public var isEncodableFromFloat: Bool {
        switch self {
        case .f32, .f16, .bf16, .f64: return true
        default: return false
        }
    }

    /// The lower-case name used on the command line and by torch ("f16" -> `.f16`).
    public init?(commandLineName name: String) {
        switch name.lowercased() {
        case "f32", "float32", "fp32": self = .f32
        case "f16", "float16", "fp16", "half": self = .f16
        case "bf16", "bfloat16": self = .bf16
        default: return nil
        }
    }
}

/// The number of bytes `elementCount` elements of `dtype` take, or nil when the
/// bit count is not a whole number of bytes or overflows.
public func byteCount(of dtype: DType, elementCount: Int) -> Int? {
    let (bits, overflow) = elementCount.multipliedReportingOverflow(by: dtype.bitWidth)
    guard !overflow, bits % 8 == 0 else { return nil }
    return bits / 8
}
