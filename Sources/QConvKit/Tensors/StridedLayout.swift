/// How a non-contiguous view lies in stored bytes (a transposed tensor, a
/// column slice, as torch saves views of one storage): element
/// `(i0, i1, ...)` is `Σ i_k × strides[k]` elements after the first one.
/// `span` elements from the first cover every element the view touches.
public struct StridedLayout: Equatable, Sendable {
    /// In elements, one per dimension, none negative.
    public let strides: [Int]
    /// Elements from the view's first to its last, inclusive (0 for an empty view).
    public let span: Int

    /// - Precondition: the strides fit the shape (a reader checked them).
    public init(shape: [Int], strides: [Int]) {
        precondition(shape.count == strides.count && strides.allSatisfy { $0 >= 0 }, "strides do not fit the shape")
        self.strides = strides
        span = shape.contains(0) ? 0 : zip(shape, strides).reduce(1) { $0 + ($1.0 - 1) * $1.1 }
    }

    /// Whether `strides` lay out `shape` row-major with no gaps (dimensions of
    /// size 1, and empty or one-element views, place nothing).
    public static func isContiguous(shape: [Int], strides: [Int]) -> Bool {
        if shape.contains(0) { return true }
        var expected = 1
        for (size, stride) in zip(shape, strides).reversed() where size != 1 {
            if stride != expected { return false }
            expected *= size
        }
        return true
    }

    /// Calls `body` for each run of `range` (elements in row-major order)
    /// along the last dimension: where it starts in the output, its first
    /// element's position in storage, its length and its stride.
    func runs(of range: Range<Int>, shape: [Int], _ body: (_ output: Int, _ position: Int, _ count: Int, _ stride: Int) throws -> Void) rethrows {
        guard !range.isEmpty else { return }
        guard let inner = shape.last, let innerStride = strides.last else { return try body(0, 0, 1, 1) }
        var index = [Int](repeating: 0, count: shape.count - 1)
        var rest = range.lowerBound / inner
        for k in stride(from: shape.count - 2, through: 0, by: -1) {
            index[k] = rest % shape[k]
            rest /= shape[k]
        }
        var column = range.lowerBound % inner
        var output = 0
        while output < range.count {
            var row = 0
            for k in 0..<index.count { row += index[k] * strides[k] }
            let count = min(inner - column, range.count - output)
            try body(output, row + column * innerStride, count, innerStride)
            output += count
            column = 0
            var k = index.count - 1
            while k >= 0 {
                index[k] += 1
                if index[k] < shape[k] { break }
                index[k] = 0
                k -= 1
            }
        }
    }

    /// Copies the bytes of elements `range` (row-major) of a view of `shape`
    /// whose first element is at `first` in `file`, `width` bytes each, into
    /// `destination`. When the stored bytes the range touches fit in
    /// `window`, they are read at once; otherwise run by run.
    func gather(_ range: Range<Int>, shape: [Int], width: Int, from file: ReadableFile, first: UInt64,
                into destination: UnsafeMutableRawPointer, window: UnsafeMutableRawBufferPointer) throws {
        var low = Int.max, high = -1
        runs(of: range, shape: shape) { _, position, count, stride in
            low = min(low, position)
            high = max(high, position + (count - 1) * stride)
        }
        guard high >= low else { return }
        if (high - low + 1) * width <= window.count {
            let bytes = UnsafeMutableRawBufferPointer(rebasing: window[0..<((high - low + 1) * width)])
            try file.read(at: first + UInt64(low * width), into: bytes)
            runs(of: range, shape: shape) { output, position, count, stride in
                for i in 0..<count {
                    (destination + (output + i) * width).copyMemory(from: bytes.baseAddress! + (position - low + i * stride) * width, byteCount: width)
                }
            }
            return
        }
        try runs(of: range, shape: shape) { output, position, count, stride in
            if stride == 1 {
                try file.read(at: first + UInt64(position * width), into: UnsafeMutableRawBufferPointer(start: destination + output * width, count: count * width))
                return
            }
            for i in 0..<count {
                try file.read(at: first + UInt64((position + i * stride) * width),
                              into: UnsafeMutableRawBufferPointer(start: destination + (output + i) * width, count: width))
            }
        }
    }
}
