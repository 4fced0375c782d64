@testable import qconv
import XCTest

/// The check `qconv` makes before it runs kernels compiled for x86-64-v3.
final class CPUCheckTests: XCTestCase {
    func testMissingExtensionsAreNamedWithTheWayOut() throws {
        guard !CPUCheck.required.isEmpty else { throw XCTSkip("a portable build needs no CPU extension") }
        XCTAssertTrue(CPUCheck.required.contains("avx2") && CPUCheck.required.contains("f16c") && CPUCheck.required.contains("fma"))
        let message = try XCTUnwrap(CPUCheck.problem(flags: ["fpu", "sse2", "avx"]))
        XCTAssertTrue(message.contains("avx2") && message.contains("f16c") && !message.contains("avx,"), message)
        XCTAssertTrue(message.contains("QCONV_PORTABLE=1"), message)
        XCTAssertTrue(message.contains("lacks avx2, fma, f16c, bmi1, bmi2, abm, movbe\n"), "every missing flag, in order: \(message)")
        XCTAssertNil(CPUCheck.problem(flags: Set(CPUCheck.required + ["sse2"])))
        // Flags that cannot be read are not a reason to refuse.
        XCTAssertNil(CPUCheck.problem(flags: nil))
    }

    /// The machine the tests run on runs the kernels (or the suite would have crashed).
    func testThisMachineHasWhatTheBuildNeeds() {
        XCTAssertTrue(CPUCheck.cpuFlags()?.contains("sse2") == true, "the flags are read from /proc/cpuinfo")
        XCTAssertNil(CPUCheck.problem())
    }
}
