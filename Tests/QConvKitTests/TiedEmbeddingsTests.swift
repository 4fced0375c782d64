import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Untying a model changes its output tensor and config.json, nothing else.
final class TiedEmbeddingsTests: XCTestCase {
    func testUntyingKeepsEverythingElseOfTheModel() throws {
        let folder = TemporaryDirectory()
        let base = Fixtures.path("interop/tied/base")
        for name in try FileManager.default.contentsOfDirectory(atPath: base) {
            try FileManager.default.copyItem(atPath: base + "/" + name, toPath: folder.file(name))
        }
        // An earlier qconv output in the folder: left out, and listed as such.
        writeFile(folder.file("old.qc"), Array("QCONVFMT".utf8) + [UInt8](repeating: 0, count: 64))
        let model = try Model.open(folder.path)
        XCTAssertEqual(model.leftOutFiles.map(\.name), ["old.qc"])
        let tied = try XCTUnwrap(try TiedEmbeddings.detect(in: model))
        let untied = try tied.untie(model)
        XCTAssertEqual(untied.leftOutFiles, model.leftOutFiles)
        XCTAssertEqual(untied.sideFiles.map(\.name), model.sideFiles.map(\.name))
        XCTAssertEqual(untied.inputPaths, model.inputPaths)
        XCTAssertEqual(untied.tensors.map(\.name), model.tensors.map(\.name) + (tied.outputStored ? [] : [tied.output]))
        let config = try XCTUnwrap(untied.sideFiles.first { $0.name == "config.json" })
        XCTAssertTrue(String(decoding: try config.readAll(), as: UTF8.self).contains("\"tie_word_embeddings\": false"))
    }
}
