import XCTest
import QConvKit
import QConvTestSupport

final class SmokeTests: XCTestCase {
    func testShardedSampleOpens() throws {
        let checkpoint = try Checkpoint(path: Fixtures.sample("sharded_llama"))
        XCTAssertEqual(checkpoint.tensors.count, 21)
        XCTAssertEqual(checkpoint.layout, .shardedFolder)
        XCTAssertEqual(checkpoint.auxiliaryFiles, ["config.json"])
    }
}
