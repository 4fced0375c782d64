/// How a pipeline cuts a tensor of `elementCount` elements: into chunks that
/// the workers of `computeChunksInOrder` take one at a time, and each chunk
/// into tiles that stay in a core's cache between being decoded and being
/// used. Every pipeline (quantize, encode, verify) plans with this.
///
/// Chunks and tiles are whole multiples of `unit`, the range granularity the
/// work needs (a 4-bit block, int8 rows, the source's alignment); only the
/// last chunk (and a chunk's last tile) may be shorter, at the tensor's end.
public struct ChunkPlan: Equatable, Sendable {
    /// Elements of a chunk, by default: a multiple of every 4-bit block size,
    /// and about 4 MB of float32.
    public static let defaultChunkElements = 1 << 20
    /// Elements of a tile, by default: 64 KB of float32, well inside a core's L2 cache.
    public static let defaultTileElements = 1 << 14

    public let elementCount: Int
    public let unit: Int
    /// Elements per chunk: the largest multiple of `unit` within the chunk limit, at least `unit`.
    public let chunk: Int
    /// Elements per tile: the largest multiple of `unit` within the tile limit, at least `unit`.
    public let tile: Int

    public init(elementCount: Int, unit: Int, chunkLimit: Int = defaultChunkElements, tileLimit: Int = defaultTileElements) {
        precondition(unit > 0, "a chunk unit of at least one element")
        self.elementCount = elementCount
        self.unit = unit
        chunk = max(unit, chunkLimit / unit * unit)
        tile = max(unit, tileLimit / unit * unit)
    }

    /// A plan whose units are whole rows of `columns` elements, in groups
    /// that also start where `alignment` allows: `lcm(columns, alignment)`.
    public init(rowsOf columns: Int, elementCount: Int, alignment: Int, chunkLimit: Int = defaultChunkElements,
                tileLimit: Int = defaultTileElements) {
        self.init(elementCount: elementCount, unit: leastCommonMultiple(max(columns, 1), max(alignment, 1)),
                  chunkLimit: chunkLimit, tileLimit: tileLimit)
    }

    public var chunkCount: Int { (elementCount + chunk - 1) / chunk }

    /// The elements of chunk `c`.
    public func chunkRange(_ c: Int) -> Range<Int> {
        c * chunk..<min(elementCount, (c + 1) * chunk)
    }

    /// The tiles of `range` (a chunk), in order.
    public func tiles(of range: Range<Int>) -> [Range<Int>] {
        stride(from: range.lowerBound, to: range.upperBound, by: tile).map { $0..<min(range.upperBound, $0 + tile) }
    }
}

/// The greatest common divisor of two non-negative integers.
public func greatestCommonDivisor(_ a: Int, _ b: Int) -> Int {
    var (x, y) = (a, b)
    while y != 0 { (x, y) = (y, x % y) }
    return x
}

/// The least common multiple of two positive integers: the smallest range
/// length that is aligned for two readers (a 4-bit block and a row, say).
public func leastCommonMultiple(_ a: Int, _ b: Int) -> Int {
    a / greatestCommonDivisor(a, b) * b
}

/// `ceil(a / b)` for a non-negative `a` and a positive `b`.
public func divideRoundingUp(_ a: Int, _ b: Int) -> Int {
    (a + b - 1) / b
}
