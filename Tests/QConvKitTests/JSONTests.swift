import XCTest
import QConvKit
import QConvTestSupport

final class JSONTests: XCTestCase {
    private func parse(_ text: String) throws -> JSONValue { try JSONParser.parse(text) }

    private func assertRejected(_ text: String, _ reason: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try JSONParser.parse(text), "accepted \(text.debugDescription)", file: file, line: line) { error in
            guard let error = error as? JSONParseError else { return XCTFail("\(error)", file: file, line: line) }
            if let reason { XCTAssertEqual(error.description, reason, text.debugDescription, file: file, line: line) }
        }
    }

    // MARK: - Grammar

    func testValidDocuments() throws {
        XCTAssertEqual(try parse("null"), .null)
        XCTAssertEqual(try parse(" true "), .bool(true))
        XCTAssertEqual(try parse("\t\r\nfalse\n"), .bool(false))
        XCTAssertEqual(try parse("\"\""), .string(""))
        XCTAssertEqual(try parse("[]"), .array([]))
        XCTAssertEqual(try parse("{}"), .object(JSONObject()))
        XCTAssertEqual(try parse("[ 1 , [ ] , { } , \"x\" , null ]"),
                       .array([.int(1), .array([]), .object(JSONObject()), .string("x"), .null]))
        XCTAssertEqual(try parse("{\"a\" : {\"b\" : [true]}}"), .object(["a": .object(["b": .array([.bool(true)])])]))
        for number in ["0", "-0", "1", "-1", "0.5", "-0.0", "1e5", "1E+5", "1e-5", "12.5e-3", "123456789012345678901234567890"] {
            XCTAssertEqual(try parse(number), .number(JSONNumber(text: number)), number)
        }
        XCTAssertEqual(try parse("\"é😀\""), .string("é😀"))
    }

    func testInvalidDocuments() {
        assertRejected("", "unexpected end of JSON at byte 0")
        assertRejected("   ", "unexpected end of JSON at byte 3")
        assertRejected("{", "expected a string key at byte 1")
        assertRejected("[", "unexpected end of JSON at byte 1")
        assertRejected("[1", "expected ',' or ']' in an array at byte 2")
        assertRejected("{\"a\"", "expected ':' after an object key at byte 4")
        assertRejected("{\"a\":}", "unexpected character '}' at byte 5")
        assertRejected("{\"a\":1,}", "expected a string key at byte 7")
        assertRejected("[1,]", "unexpected character ']' at byte 3")
        assertRejected("[,1]", "unexpected character ',' at byte 1")
        assertRejected("{\"a\":1 \"b\":2}", "expected ',' or '}' in an object at byte 7")
        assertRejected("{1:2}", "expected a string key at byte 1")
        assertRejected("NaN", "unexpected character 'N' at byte 0")
        assertRejected("[Infinity]", "unexpected character 'I' at byte 1")
        assertRejected("-Infinity", "invalid number at byte 1")
        assertRejected("nul", "invalid literal at byte 0")
        assertRejected("tru", "invalid literal at byte 0")
        assertRejected("True", "unexpected character 'T' at byte 0")
        assertRejected("01", "number with a leading zero at byte 1")
        assertRejected("-01", "number with a leading zero at byte 2")
        assertRejected("1.", "invalid number: no digit after '.' at byte 2")
        assertRejected(".5", "unexpected character '.' at byte 0")
        assertRejected("+1", "unexpected character '+' at byte 0")
        assertRejected("1e", "invalid number: no digit in exponent at byte 2")
        assertRejected("1e+", "invalid number: no digit in exponent at byte 3")
        assertRejected("-", "invalid number at byte 1")
        assertRejected("0x10", "unexpected text after the JSON value at byte 1")
        assertRejected("\"abc", "unterminated string at byte 4")
        assertRejected("\"ab\\", "unterminated string at byte 4")
        assertRejected("\"a\u{01}\"", "control character in a string at byte 2")
        assertRejected("\"a\nb\"", "control character in a string at byte 2")
        assertRejected("\"\\q\"", "invalid escape '\\q' at byte 3")
        assertRejected("\"\\u12xy\"", "invalid hex digit in \\u escape at byte 5")
        assertRejected("\"\\u12", "truncated \\u escape at byte 3")
        assertRejected("\"\\u00G0\"", "invalid hex digit in \\u escape at byte 5")
        assertRejected("'a'", "unexpected character ''' at byte 0")
        assertRejected("{} {}", "unexpected text after the JSON value at byte 3")
        assertRejected("[] // comment", "unexpected text after the JSON value at byte 3")
        assertRejected("/* c */ []", "unexpected character '/' at byte 0")
        assertRejected("\u{FEFF}[]")
        assertRejected("\u{A0}[]")
    }

    func testNestingIsCapped() throws {
        XCTAssertEqual(JSONParser.maximumDepth, 128)
        let deepest = String(repeating: "[", count: 128) + String(repeating: "]", count: 128)
        XCTAssertNoThrow(try parse(deepest))
        assertRejected(String(repeating: "[", count: 129) + String(repeating: "]", count: 129),
                       "JSON nested deeper than 128 levels at byte 128")
        let objects = String(repeating: "{\"k\":", count: 128) + "0" + String(repeating: "}", count: 128)
        XCTAssertNoThrow(try parse(objects))
        assertRejected("[" + objects + "]")
        // Depth is about nesting, not count: many siblings are fine.
        XCTAssertNoThrow(try parse("[" + Array(repeating: "[[]]", count: 10_000).joined(separator: ",") + "]"))
        // A hostile header far deeper than the cap is rejected, not a stack overflow.
        assertRejected(String(repeating: "[", count: 1_000_000))
    }

    // MARK: - Strings

    func testEscapes() throws {
        XCTAssertEqual(try parse(#""\" \\ \/ \b \f \n \r \t""#), .string("\" \\ / \u{08} \u{0C} \n \r \t"))
        XCTAssertEqual(try parse(#""\u0041\u00e9\u00E9\u4e2d\u0000""#), .string("Aéé中\u{0}"))
        XCTAssertEqual(try parse(#""\ud83d\ude00""#), .string("😀"))
        XCTAssertEqual(try parse(#""\uD834\uDD1E!""#), .string("𝄞!"))
        XCTAssertEqual(try parse(#""\udbff\udfff""#), .string("\u{10FFFF}"))
        XCTAssertEqual(try parse("\"a\\u0301\""), .string("a\u{301}"))
        // Raw UTF-8 and escapes mix.
        XCTAssertEqual(try parse(#""é\n😀""#), .string("é\n😀"))
    }

    func testUnpairedSurrogatesAreRejected() {
        let unpaired = "unpaired UTF-16 surrogate in \\u escape"
        assertRejected(#""\ud800""#, "\(unpaired) at byte 7")
        assertRejected(#""\ud800x""#, "\(unpaired) at byte 7")
        assertRejected(#""\ud800\n""#, "\(unpaired) at byte 7")
        assertRejected(#""\ud800\u0041""#, "\(unpaired) at byte 13")
        assertRejected(#""\ud800\ud800""#, "\(unpaired) at byte 13")
        assertRejected(#""\udc00""#, "\(unpaired) at byte 7")
        assertRejected(#""\ude00\ud83d""#, "\(unpaired) at byte 7")
    }

    func testInvalidUTF8InStringsIsRejected() throws {
        XCTAssertThrowsError(try JSONParser.parse([0x22, 0xFF, 0x22]))
        XCTAssertThrowsError(try JSONParser.parse([0x22, 0xC3, 0x22]))
        XCTAssertThrowsError(try JSONParser.parse([0x22, 0xED, 0xA0, 0x80, 0x22]))
        XCTAssertEqual(try JSONParser.parse([0x22, 0xC3, 0xA9, 0x22]), .string("é"))
    }

    // MARK: - Numbers and objects

    func testNumberTextIsPreserved() throws {
        let max = try XCTUnwrap(parse("18446744073709551615").numberValue)
        XCTAssertEqual(max.text, "18446744073709551615")
        XCTAssertEqual(max.uint64Value, UInt64.max)
        XCTAssertNil(max.intValue)
        XCTAssertNil(try parse("18446744073709551616").numberValue?.uint64Value)
        XCTAssertEqual(try parse("9223372036854775807").numberValue?.intValue, Int.max)
        XCTAssertEqual(try parse("9007199254740993").numberValue?.uint64Value, 9_007_199_254_740_993)  // not a Double
        XCTAssertEqual(try parse("1.0").numberValue?.text, "1.0")
        XCTAssertNil(try parse("1.0").numberValue?.uint64Value)
        XCTAssertNil(try parse("1e3").numberValue?.uint64Value)
        XCTAssertEqual(try parse("1e3").numberValue?.doubleValue, 1000)
        XCTAssertEqual(try parse("-5").numberValue?.isNegative, true)
        XCTAssertEqual(try parse("-0").numberValue?.isNegative, false)
        XCTAssertEqual(try parse("-0.001").numberValue?.isNegative, true)
        XCTAssertNil(try parse("-5").numberValue?.uint64Value)
        XCTAssertEqual(try parse("-5").numberValue?.intValue, -5)
        // The writer gives the text back unchanged.
        for text in ["18446744073709551615", "1.0", "-0", "1E+2", "0.30000000000000004"] {
            XCTAssertEqual(JSONWriter.serialize(try parse(text)), text)
        }
    }

    func testDuplicateKeysArePreservedInOrder() throws {
        let object = try XCTUnwrap(parse(#"{"b":1,"a":2,"b":3}"#).objectValue)
        XCTAssertEqual(object.keys, ["b", "a", "b"])
        XCTAssertEqual(object.members.map { $0.value.numberValue?.text }, ["1", "2", "3"])
        XCTAssertEqual(object["b"], .int(1))
        XCTAssertNil(object["c"])
        XCTAssertEqual(JSONWriter.serialize(.object(object)), #"{"b":1,"a":2,"b":3}"#)
        // Member order is part of equality.
        XCTAssertNotEqual(try parse(#"{"a":1,"b":2}"#), try parse(#"{"b":2,"a":1}"#))
    }

    // MARK: - Writer

    func testCompactWriterRoundTrips() throws {
        let text = #"{"a":[1,-2.5e3,true,false,null,"x\"y\\z"],"b":{},"c":[],"é😀":"\u0001\u001f\t\n"}"#
        let value = try parse(text)
        XCTAssertEqual(JSONWriter.serialize(value), #"{"a":[1,-2.5e3,true,false,null,"x\"y\\z"],"b":{},"c":[],"é😀":"\u0001\u001f\t\n"}"#)
        XCTAssertEqual(try parse(JSONWriter.serialize(value)), value)
        XCTAssertEqual(try parse(JSONWriter.serialize(value, style: .indented)), value)
        // Every control character: named escapes where JSON has them, \u00xx (lower case, as serde) otherwise.
        let controls = String((0..<0x20).map { Character(Unicode.Scalar($0)!) })
        XCTAssertEqual(JSONWriter.serialize(.string(controls)),
                       #""\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f""#)
        XCTAssertEqual(try parse(JSONWriter.serialize(.string(controls))), .string(controls))
        // serde writes '/', DEL and non-ASCII as they are.
        XCTAssertEqual(JSONWriter.serialize(.string("/\u{7F}é")), "\"/\u{7F}é\"")
    }

    func testValueConstructors() {
        XCTAssertEqual(JSONWriter.serialize(.double(2)), "2")
        XCTAssertEqual(JSONWriter.serialize(.double(0.1)), "0.1")
        XCTAssertEqual(JSONWriter.serialize(.double(.nan)), "null")
        XCTAssertEqual(JSONWriter.serialize(.float(.infinity)), "null")
        XCTAssertEqual(JSONWriter.serialize(.uint(UInt64.max)), "18446744073709551615")
        XCTAssertEqual(JSONWriter.serialize(.int(-3)), "-3")
        XCTAssertEqual(JSONWriter.serialize(["a", 1, true, nil]), #"["a",1,true,null]"#)
    }

    /// A header as the Python safetensors writer (serde) wrote it, names and
    /// metadata full of characters that need escaping: rewriting it gives the same bytes.
    func testCompactWriterMatchesPythonSafetensorsHeader() throws {
        let path = Fixtures.path("foundation/python_escapes.safetensors")
        let file = try SafeTensorsFile(path: path)
        XCTAssertEqual(file.tensors.map(\.name), ["😀", "f64", "quote\"back\\slash/", "tab\tname", "café", "i16", "u8", "ctrl\u{01}\u{1F}\u{7F}"])
        XCTAssertEqual(file.header.metadata?.map(\.key), ["note", "format"])
        XCTAssertEqual(file.header.metadata?.first?.value, "é\n\u{01}\"\\ 😀")
        let original = try file.file.readBytes(at: 8, count: Int(file.header.headerLength))
        let written = SafeTensorsWriter.headerBytes(tensors: file.tensors.map(\.info), metadata: file.header.metadata)
        XCTAssertEqual(String(decoding: written, as: UTF8.self), String(decoding: original, as: UTF8.self))
        XCTAssertEqual(written, original)
    }

    /// The indented writer with sorted keys gives what Python's
    /// `json.dumps(value, indent=2, sort_keys=True)` gives (reference made with Python 3).
    func testIndentedWriterMatchesPythonJSONDumps() throws {
        let input = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("foundation/python_indent_input.json")))
        let expected = try String(contentsOfFile: Fixtures.path("foundation/python_indent_expected.json"), encoding: .utf8)
        let value = try JSONParser.parse([UInt8](input))
        XCTAssertEqual(JSONWriter.serialize(value, style: .indented, sortKeys: true) + "\n", expected)
        XCTAssertEqual(try JSONParser.parse(expected), try JSONParser.parse(JSONWriter.serialize(value, style: .indented, sortKeys: true)))
    }

    /// The index transformers wrote for the sharded sample, parsed and written again.
    func testIndentedWriterReproducesTransformersIndex() throws {
        let path = Fixtures.sample("sharded_llama/model.safetensors.index.json")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let value = try JSONParser.parse(text)
        XCTAssertEqual(JSONWriter.serialize(value, style: .indented, sortKeys: true) + "\n", text)
    }

    func testIndentedWriterWithoutSortingKeepsOrder() throws {
        let value = try parse(#"{"b":[1,{"d":null,"c":[]}],"a":{}}"#)
        XCTAssertEqual(JSONWriter.serialize(value, style: .indented), """
        {
          "b": [
            1,
            {
              "d": null,
              "c": []
            }
          ],
          "a": {}
        }
        """)
    }
}
