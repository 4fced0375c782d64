import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Files that travel with the weights: subfolders of a sentence-transformers
/// model come back from a container, an earlier qconv output is never embedded.
final class SideFilesCLITests: XCTestCase {
    /// A sentence-transformers layout: `modules.json`, `1_Pooling/config.json`,
    /// an empty `2_Normalize/`, and a container from an earlier run.
    private func makeModelFolder(in directory: TemporaryDirectory) throws -> String {
        let folder = directory.file("minilm")
        let manager = FileManager.default
        try manager.createDirectory(atPath: folder + "/1_Pooling", withIntermediateDirectories: true)
        try manager.createDirectory(atPath: folder + "/2_Normalize", withIntermediateDirectories: true)
        let source = Fixtures.sample("lora_llama_basic/base")
        for name in ["model.safetensors", "config.json"] { try manager.copyItem(atPath: source + "/" + name, toPath: folder + "/" + name) }
        writeFile(folder + "/modules.json", Array(#"[{"idx": 0, "path": ""}, {"idx": 1, "path": "1_Pooling"}, {"idx": 2, "path": "2_Normalize"}]"#.utf8))
        writeFile(folder + "/1_Pooling/config.json", Array(#"{"word_embedding_dimension": 64, "pooling_mode_mean_tokens": true}"#.utf8))
        XCTAssertEqual(try runQConv(["to-nf4", folder, folder + "/earlier.qc", "--quiet"]).status, 0)
        return folder
    }

    func testSubfoldersComeBackAndEarlierOutputsStayBehind() throws {
        let directory = TemporaryDirectory()
        let folder = try makeModelFolder(in: directory)
        let convert = try runQConv(["to-nf4", folder, directory.file("m.qc")])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        XCTAssertTrue(convert.stdout.contains("files        1_Pooling/config.json, config.json, modules.json\n"), convert.stdout)
        XCTAssertTrue(convert.stdout.contains("not carried  earlier.qc (a qconv container (an earlier output))\n"), convert.stdout)
        let container = try ContainerFile(path: directory.file("m.qc"))
        XCTAssertEqual(container.header.files.map(\.name), ["1_Pooling/config.json", "config.json", "modules.json"])

        XCTAssertEqual(try runQConv(["dequant", directory.file("m.qc"), directory.file("restored"), "--quiet"]).status, 0)
        for name in ["1_Pooling/config.json", "config.json", "modules.json"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: directory.file("restored/" + name))),
                           try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name)), name)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.file("restored/earlier.qc")))
        // A merge into the folder carries them too.
        let merged = try runQConv(["merge-lora", folder, Fixtures.sample("lora_llama_basic/adapter"), directory.file("merged"), "--quiet"])
        XCTAssertEqual(merged.status, 0, merged.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory.file("merged/1_Pooling/config.json")))
    }
}
