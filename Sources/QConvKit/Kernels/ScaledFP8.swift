/// The scales of FP8 weights applied to their decoded values: each value is
/// multiplied by its scale in float32, once (as FP8 checkpoints' own
/// dequantization does, before one rounding to the output dtype).
enum ScaledFP8 {
    /// Multiplies `values`, elements `range` of a `[rows, columns]` tensor
    /// (row-major), by their scales.
    static func applyScales(_ values: UnsafeMutablePointer<Float>, range: Range<Int>, columns: Int,
                            granularity: ScaledFP8Parameters.Granularity, scales: UnsafeBufferPointer<Float>) {
        guard !range.isEmpty else { return }
        if case .tensor = granularity {
            let scale = scales[0]
            for i in 0..<range.count { values[i] *= scale }
            return
        }
        var element = range.lowerBound
        while element < range.upperBound {
            let row = element / columns
            let rowEnd = min(range.upperBound, (row + 1) * columns)
            switch granularity {
            case .tensor, .channel:
                multiply(values + (element - range.lowerBound), count: rowEnd - element, by: scales[row])
            case let .block(blockRows, blockColumns):
                let base = (row / blockRows) * ((columns + blockColumns - 1) / blockColumns)
                var column = element - row * columns
                while row * columns + column < rowEnd {
                    let end = min(rowEnd - row * columns, (column / blockColumns + 1) * blockColumns)
                    multiply(values + (row * columns + column - range.lowerBound), count: end - column, by: scales[base + column / blockColumns])
                    column = end
                }
            }
            element = rowEnd
        }
    }

    @inline(__always)
    private static func multiply(_ values: UnsafeMutablePointer<Float>, count: Int, by scale: Float) {
        for i in 0..<count { values[i] *= scale }
    }
}
