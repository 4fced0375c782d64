import QConvKit

/// Single-thread throughput of the hot kernels, in elements (or bytes) per second.
/// `qconv-bench --kernels` prints it; it helps tell a slow kernel from slow I/O.
/// The kernels run on one 16K-element tile in the core's cache, which is how
/// the conversions call them.
enum KernelThroughput {
    static func run() {
        let n = 1 << 14
        var random = SplitMix64(seed: 7)
        var floats = [Float](repeating: 0, count: n)
        for i in 0..<n { floats[i] = 0.02 * random.nextGaussian() }
        var halves = [UInt8](repeating: 0, count: n * 2)
        var output = [Float](repeating: 0, count: n)
        var packed = [UInt8](repeating: 0, count: n)
        var absmax = [Float](repeating: 0, count: n / 32 + 1)
        var codes = [Int8](repeating: 0, count: n)
        var scales = [Float](repeating: 0, count: n / 1024 + 1)
        var outliers = [UInt16](repeating: 0, count: 1)

        print("\n### Kernel throughput (one thread, a tile of \(n) elements in cache)\n")
        print("| kernel | M elements/s |")
        print("|---|---:|")
        func report(_ name: String, _ body: () -> Void) {
            body()  // warm up
            let start = monotonicSeconds()
            var rounds = 0
            repeat { body(); rounds += 1 } while monotonicSeconds() - start < 0.5
            let rate = Double(n * rounds) / (monotonicSeconds() - start) / 1e6
            print("| \(name) | \(fixed(rate, 0)) |")
        }
        floats.withUnsafeBufferPointer { source in
            halves.withUnsafeMutableBytes { half in
                output.withUnsafeMutableBufferPointer { out in
                    packed.withUnsafeMutableBufferPointer { packed in
                        absmax.withUnsafeMutableBufferPointer { absmax in
                            codes.withUnsafeMutableBufferPointer { codes in
                                scales.withUnsafeMutableBufferPointer { scales in
                                    outliers.withUnsafeMutableBufferPointer { outliers in
                                        let s = source.baseAddress!, o = out.baseAddress!
                                        report("F32 -> F16 encode") { FloatConversion.encode(s, count: n, as: .f16, into: half.baseAddress!) }
                                        report("F16 -> F32 decode") { FloatConversion.decode(UnsafeRawPointer(half.baseAddress!), dtype: .f16, count: n, into: o) }
                                        report("F32 -> BF16 encode") { FloatConversion.encode(s, count: n, as: .bf16, into: half.baseAddress!) }
                                        // Any byte is an FP8 code: the half bytes serve as n codes.
                                        report("F8_E4M3 -> F32 decode") { FloatConversion.decode(UnsafeRawPointer(half.baseAddress!), dtype: .f8e4m3, count: n, into: o) }
                                        report("F8_E5M2 -> F32 decode") { FloatConversion.decode(UnsafeRawPointer(half.baseAddress!), dtype: .f8e5m2, count: n, into: o) }
                                        report("xxHash64 (4 bytes per element)") { _ = XXHash64.hash(UnsafeRawBufferPointer(start: s, count: n * 4)) }
                                        for format in FourBitFormat.allCases {
                                            report("\(format.rawValue) quantize, block 64") {
                                                Blockwise4Bit.quantize(s, count: n, blockSize: 64, format: format, packed: packed.baseAddress!, absmax: absmax.baseAddress!)
                                            }
                                        }
                                        report("nf4 dequantize, block 64") {
                                            Blockwise4Bit.dequantize(packed: packed.baseAddress!, count: n, blockSize: 64, format: .nf4, absmax: absmax.baseAddress!, into: o)
                                        }
                                        let rows = n / 1024
                                        report("int8 quantize, 1024 columns") {
                                            Int8Vectorwise.quantize(rows: source, rowCount: rows, columns: 1024, selection: .none,
                                                                    codes: codes, rowScales: UnsafeMutableBufferPointer(rebasing: scales[0..<rows]),
                                                                    outlierValues: UnsafeMutableBufferPointer(rebasing: outliers[0..<0]))
                                        }
                                        report("int8 outlier scan, 1024 columns") {
                                            var scan = OutlierScan(columns: 1024)
                                            scan.add(source)
                                        }
                                        report("int8 dequantize, 1024 columns") {
                                            Int8Vectorwise.dequantize(codes: UnsafeBufferPointer(codes), rowScales: UnsafeBufferPointer(rebasing: scales[0..<rows]),
                                                                      rowCount: rows, columns: 1024, outlierColumns: [],
                                                                      outlierValues: UnsafeBufferPointer(rebasing: outliers[0..<0]), into: out)
                                        }
                                        report("error metrics") {
                                            var metrics = ErrorMetrics()
                                            metrics.add(original: UnsafeBufferPointer(start: s, count: n), reconstructed: UnsafeBufferPointer(start: o, count: n))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
