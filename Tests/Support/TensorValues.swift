import QConvKit

/// The values of elements `range` (default: all) of a tensor, through
/// QConvKit's reader, for comparison with references.
public func readFloats(_ source: FloatTensorSource, _ range: Range<Int>? = nil) throws -> [Float] {
    let range = range ?? 0..<source.info.elementCount
    var values = [Float](repeating: 0, count: range.count)
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, source.scratchBytes(for: range.count)), alignment: 64)
    defer { scratch.deallocate() }
    try values.withUnsafeMutableBufferPointer { try source.readFloats(range, into: $0.baseAddress!, scratch: scratch) }
    return values
}

/// The bit patterns of every value of a tensor, as its reader gives them.
public func floatBits(_ tensor: ModelTensor) throws -> [UInt32] {
    try readFloats(try tensor.values()).map(\.bitPattern)
}
