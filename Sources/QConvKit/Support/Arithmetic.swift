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
