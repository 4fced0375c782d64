import XCTest
import QConvTestSupport

final class InspectCLITests: XCTestCase {
    func testInspectShardedSampleAsJSON() throws {
        let result = try runQConv(["inspect", Fixtures.sample("sharded_llama"), "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("\"tensor_count\": 21"), result.stdout)
        XCTAssertTrue(result.stdout.contains("\"parameter_count\": 391808"), result.stdout)
    }
}
