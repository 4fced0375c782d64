/// The largest magnitude of a run of floats, as torch's max reduction of
/// `|x|` gives it: NaN wins over everything.
///
/// Non-negative floats order like their bit patterns, and every NaN pattern
/// is above infinity's, so an integer max of `bits & 0x7FFF_FFFF` does it.
/// Written as plain loops over the bits: LLVM vectorizes them, and only while
/// the reduction holds no select.
enum Magnitudes {
    /// max |x|; 0 for no values.
    @inline(__always)
    static func absoluteMaximum(_ values: UnsafePointer<Float>, count: Int) -> Float {
        var maximum: UInt32 = 0
        for i in 0..<count { maximum = max(maximum, values[i].bitPattern & 0x7FFF_FFFF) }
        return Float(bitPattern: maximum)
    }

    /// max |x| over the values with `|x| < threshold` (a positive threshold;
    /// infinity leaves out only infinities), except that a NaN anywhere makes
    /// the result NaN.
    @inline(__always)
    static func absoluteMaximum(_ values: UnsafePointer<Float>, count: Int, below threshold: Float) -> Float {
        // Two maxima, of every value and of those below the threshold, with the
        // comparison done as a sign mask.
        let limit = Int32(bitPattern: threshold.bitPattern & 0x7FFF_FFFF)
        var every: UInt32 = 0, below: UInt32 = 0
        for i in 0..<count {
            let magnitude = values[i].bitPattern & 0x7FFF_FFFF
            every = max(every, magnitude)
            below = max(below, magnitude & UInt32(bitPattern: (Int32(bitPattern: magnitude) &- limit) >> 31))
        }
        return Float(bitPattern: every > Float.infinity.bitPattern ? every : below)
    }
}
