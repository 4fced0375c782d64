/// A tensor's name, element type and shape: everything but its data.
public struct TensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// The product of the shape (1 for a scalar). Shapes are validated against
    /// overflow when read, so this cannot trap on a header that was accepted.
    public var elementCount: Int { shape.reduce(1, *) }

    /// Bytes of data; validated on read, so non-nil for accepted tensors.
    public var byteCount: Int { QConvKit.byteCount(of: dtype, elementCount: elementCount) ?? 0 }

    /// Rows and columns when the tensor is viewed as a matrix: the last
    /// dimension is the row length, all others are folded into rows.
    public var matrixShape: (rows: Int, columns: Int) {
        guard let last = shape.last else { return (1, 1) }
        return (last == 0 ? 0 : elementCount / last, last)
    }

    /// `[2, 3]` as a string.
    public var shapeDescription: String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }
}
