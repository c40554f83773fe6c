// The phone app's camera: the back camera's stream in a <video>, codes read from its
// frames (QR, DataMatrix, Code 128) by the browser's BarcodeDetector where it has one
// that reads all three, otherwise by zxing-wasm (ZXing-C++ as WebAssembly, from this
// server's npm packages, never a CDN), and photos grabbed from the stream or taken
// from a file, downscaled and compressed on the phone before they are queued.

export const FORMATS = ["QRCode", "DataMatrix", "Code128"];
const DETECTOR_FORMATS = ["qr_code", "data_matrix", "code_128"];
const ZXING = "/viewer/vendor/zxing-wasm/dist/es/reader/index.js";
const ZXING_WASM = "/viewer/vendor/zxing-wasm/dist/reader/zxing_reader.wasm";
export const PHOTO_MAX_SIDE = 1600;
export const PHOTO_QUALITY = 0.8;
// frames are decoded at most this wide: enough for a code filling a tenth of the frame
const DECODE_MAX_SIDE = 1280;

export class Camera {
  constructor(video) {
    this.video = video;
    this.stream = null;
  }

  get live() {
    return Boolean(this.stream && this.stream.active && this.video.readyState >= 2);
  }

  async start() {
    if (this.stream && this.stream.active) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this browser gives no camera to the page (it needs HTTPS or localhost)");
    }
    this.stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "environment", width: { ideal: 1920 }, height: { ideal: 1080 } },
      audio: false,
    });
    this.video.srcObject = this.stream;
    this.video.muted = true;
    this.video.playsInline = true;
    await this.video.play();
  }

  stop() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.video.srcObject = null;
  }

  // The current frame drawn on a canvas, at most `maxSide` pixels on its long side.
  frame(maxSide) {
    return drawScaled(this.video, this.video.videoWidth, this.video.videoHeight, maxSide);
  }
}

function drawScaled(source, width, height, maxSide) {
  const scale = Math.min(1, maxSide / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
  return canvas;
}

function jpeg(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the photo could not be encoded"))),
                  "image/jpeg", PHOTO_QUALITY);
  });
}

// A photo of the camera's current frame: { blob, width, height }.
export async function grabPhoto(camera) {
  if (!camera.live) throw new Error("the camera is not running");
  const canvas = camera.frame(PHOTO_MAX_SIDE);
  return { blob: await jpeg(canvas), width: canvas.width, height: canvas.height };
}

// A photo from a file (the phone's own camera app, or its gallery), downscaled and
// recompressed like a grabbed one; the file's orientation is honoured.
export async function photoFromFile(file) {
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  try {
    const canvas = drawScaled(bitmap, bitmap.width, bitmap.height, PHOTO_MAX_SIDE);
    return { blob: await jpeg(canvas), width: canvas.width, height: canvas.height };
  } finally {
    bitmap.close();
  }
}

let making = null;

// A video's, image's or canvas's size in pixels.
function size(source) {
  return [source.videoWidth || source.naturalWidth || source.width,
          source.videoHeight || source.naturalHeight || source.height];
}

// The decoder this browser uses: { name, note, read(source) → text or null }, where the
// source is a playing <video>, a loaded <img> or a canvas.
export function decoder() {
  making ??= makeDecoder().catch((error) => {
    making = null;  // a later scan tries again (e.g. the WebAssembly was not reachable)
    throw error;
  });
  return making;
}

async function makeDecoder() {
  let note = "";
  if ("BarcodeDetector" in globalThis) {
    // a detector that cannot say what it reads is passed over for the WebAssembly reader,
    // and the note says why
    let supported = [];
    try {
      supported = await globalThis.BarcodeDetector.getSupportedFormats();
    } catch (error) {
      note = `the browser's BarcodeDetector failed: ${error.message}; `;
    }
    if (DETECTOR_FORMATS.every((f) => supported.includes(f))) {
      const detector = new globalThis.BarcodeDetector({ formats: DETECTOR_FORMATS });
      return {
        name: "BarcodeDetector", note,
        async read(source) {
          const found = await detector.detect(source);
          return found.length ? found[0].rawValue : null;
        },
      };
    }
    note += `the browser's BarcodeDetector reads ${supported.join(", ") || "no format"} only`;
  }
  const zxing = await import(ZXING);
  await zxing.prepareZXingModule({
    overrides: {
      locateFile: (path, prefix) => (path.endsWith(".wasm") ? ZXING_WASM : prefix + path),
    },
    fireImmediately: true,
  });
  // "Plain": the data as encoded, FNC1 inside a GS1 code as GS (\x1d), not the
  // parenthesised form made for people (whose parentheses a value may itself contain)
  const options = { formats: FORMATS, tryHarder: true, maxNumberOfSymbols: 1, textMode: "Plain" };
  return {
    name: "zxing-wasm", note,
    async read(source) {
      const [width, height] = size(source);
      const canvas = drawScaled(source, width, height, DECODE_MAX_SIDE);
      const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
      const found = (await zxing.readBarcodes(pixels, options)).find((r) => r.isValid);
      if (!found) return null;
      // a GS1 code goes on as a scanner sends it: its symbology identifier (]d2 DataMatrix,
      // ]C1 GS1-128, ]Q3 QR) in front, which tells the server the data is GS1 element
      // strings (AI 10 lot, AI 21 serial) and not a uid
      return found.contentType === "GS1" ? found.symbologyIdentifier + found.text : found.text;
    },
  };
}
