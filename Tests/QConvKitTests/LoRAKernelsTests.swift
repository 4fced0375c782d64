import XCTest
import QConvKernels512
import QConvProcessor
@testable import QConvKit

/// The merge's delta kernels give the same bits however many rows and
/// columns they take at once: the four-row kernel equals the one-row loop,
/// and the 512-bit eight-row kernel equals the four-row one, for both ways
/// of summing the products and for shapes with every kind of tail.
final class LoRAKernelsTests: XCTestCase {
    private struct Case {
        let rows: Int, rank: Int, columns: Int
        var weights: [Float], basis: [Float], values: [Float]

        init(rows: Int, rank: Int, columns: Int, seed: UInt64) {
            self.rows = rows
            self.rank = rank
            self.columns = columns
            func draw(_ label: String, _ count: Int, _ scale: Float) -> [Float] {
                let key = SplitMix64.key(seed: seed, label: label)
                return (0..<count).map { (Float(SplitMix64.unit(key: key, index: UInt64($0))) - 0.5) * scale }
            }
            weights = draw("weights", rows * rank, 0.2)
            basis = draw("basis", rank * columns, 0.3)
            values = draw("values", rows * columns, 4)
        }

        /// The values after adding the delta one row at a time.
        func byRows<P: ProductAccumulation>(_ products: P.Type) -> [Float] {
            var result = values
            result.withUnsafeMutableBufferPointer { out in
                weights.withUnsafeBufferPointer { w in
                    for row in 0..<rows {
                        LoRAKernels.addDelta(w.baseAddress! + row * rank, basis, rank: rank, columns: columns, scale: 1.75,
                                             into: out.baseAddress! + row * columns, P.self)
                    }
                }
            }
            return result
        }

        /// The values after adding the delta `rowsPerCall` rows at a time with `kernel`.
        func byGroups(of rowsPerCall: Int, _ kernel: LoRAKernels.EightRowKernel) -> [Float] {
            let panels = LoRAKernels.panels(basis, rank: rank, columns: columns)
            var result = values
            result.withUnsafeMutableBufferPointer { out in
                weights.withUnsafeBufferPointer { w in
                    basis.withUnsafeBufferPointer { b in
                        panels.withUnsafeBufferPointer { p in
                            for row in stride(from: 0, to: rows, by: rowsPerCall) {
                                kernel(w.baseAddress! + row * rank, b.baseAddress!, p.baseAddress!, rank, columns, 1.75, out.baseAddress! + row * columns)
                            }
                        }
                    }
                }
            }
            return result
        }
    }

    private static let shapes: [(rank: Int, columns: Int)] = [(1, 5), (3, 16), (16, 31), (16, 32), (48, 48), (7, 100), (48, 2048 + 23)]

    private func fourRows<P: ProductAccumulation>(_ products: P.Type) -> LoRAKernels.EightRowKernel {
        { w, b, p, rank, columns, scale, rows in
            LoRAKernels.addDelta4(w, b, panels: p, rank: rank, columns: columns, scale: scale, into: rows, P.self)
        }
    }

    func testFourRowsEqualOneRowAtATime() {
        for (index, shape) in Self.shapes.enumerated() {
            let c = Case(rows: 8, rank: shape.rank, columns: shape.columns, seed: UInt64(index))
            assertSameBits(c.byGroups(of: 4, fourRows(FusedProducts.self)), c.byRows(FusedProducts.self), "\(shape)")
            assertSameBits(c.byGroups(of: 4, fourRows(SeparateProducts.self)), c.byRows(SeparateProducts.self), "\(shape)")
        }
    }

    private func assertSameBits(_ a: [Float], _ b: [Float], _ message: String, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, message, line: line)
        let differing = zip(a, b).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        XCTAssertTrue(differing.isEmpty, "\(message): \(differing.count) values differ, the first at \(differing.first.map { String($0.offset) } ?? "-")",
                      line: line)
    }

    func testTheTwoSumsDiffer() {
        // Otherwise the tests above could not tell which sum a kernel does.
        let c = Case(rows: 8, rank: 48, columns: 64, seed: 99)
        XCTAssertNotEqual(c.byRows(FusedProducts.self).map(\.bitPattern), c.byRows(SeparateProducts.self).map(\.bitPattern))
    }

    func testTheEightRowKernelGivesTheFourRowBits() throws {
        guard LoRAKernels.hasEightRowKernel else { throw XCTSkip("this CPU (or a portable build) has no 512-bit kernel") }
        for (index, shape) in Self.shapes.enumerated() {
            let c = Case(rows: 16, rank: shape.rank, columns: shape.columns, seed: 100 + UInt64(index))
            assertSameBits(c.byGroups(of: 8, FusedProducts.eightRows), c.byGroups(of: 4, fourRows(FusedProducts.self)), "\(shape)")
            assertSameBits(c.byGroups(of: 8, SeparateProducts.eightRows), c.byGroups(of: 4, fourRows(SeparateProducts.self)), "\(shape)")
        }
    }

    func testTheEightRowKernelIsPickedOnCPUsWithAVX512() throws {
        #if arch(x86_64) && os(Linux)
        let flags = try XCTUnwrap(ProcessorFlags.current)
        let wide = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
        if ProcessInfo.processInfo.environment["QCONV_PORTABLE"].map({ !$0.isEmpty && $0 != "0" }) ?? false {
            XCTAssertFalse(LoRAKernels.hasEightRowKernel)
        } else {
            XCTAssertEqual(LoRAKernels.hasEightRowKernel, wide)
        }
        #else
        throw XCTSkip("512-bit kernels are for x86-64 Linux")
        #endif
    }
}
