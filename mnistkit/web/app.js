// The page of `mnistkit serve`: draw (pointer events: mouse, touch, pen) or drop an image,
// and show what POST /api/predict answers. Plain JavaScript, no build step.
"use strict";

const PAPER = "#ffffff";
const INK = "#111111";
// Of the pad's side: thin, since the server thickens thin strokes to MNIST's width once the
// digit is scaled. A thick brush (6.5%) filled a small digit's loops: a 1, 3, 7 or 0 drawn in
// a corner, an eighth of the pad high, read as 8.
const BRUSH_FRACTION = 0.025;
// A drawing is sent this many pixels square: the server box-averages larger pictures down to
// 256 anyway, and the pad's own 560x560 took it three times as long to decode.
const SENT_PX = 256;
// A model of a dataset mnistkit does not know takes 28x28 images as they are, bright on black
// as training took them: the pad is sent so, scaled whole, with a brush as wide as MNIST's
// strokes are in that frame (2.5 px).
const AS_IS_PX = 28;
const AS_IS_BRUSH_FRACTION = 2.5 / AS_IS_PX;
// A drawing whose strokes span less than this many brush widths is a tap or a dot, no digit:
// it was read as one (a tap, "0, 29.6% sure").
const LEAST_SPAN_BRUSHES = 3;
const DEBOUNCE_MS = 120; // predict this long after the last stroke movement...
const MAX_WAIT_MS = 350; // ...but at least this often while someone keeps drawing
const ANSWER_WAIT_MS = 35000; // the server's own limit on a request is 30 s

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const dropZone = document.getElementById("drop-zone");
const hint = document.getElementById("hint");
const seen = document.getElementById("seen");
const seenEmpty = document.getElementById("seen-empty");
const digitOutput = document.getElementById("digit");
const confidenceText = document.getElementById("confidence");
const answer = document.querySelector(".answer");
const bars = document.getElementById("bars");
const statusLine = document.getElementById("status");
const fileInput = document.getElementById("file");
const glance = document.getElementById("glance");
const sent = document.createElement("canvas");
sent.width = sent.height = SENT_PX;
let brushFraction = BRUSH_FRACTION;
let takenAsIs = false; // the model's checkpoint says `preprocessing: none`

let classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
let names = classes.map(String); // each class's name: the digit, or "Ankle boot", "k"
// How each dataset made its images, so how the server prepares a drawing (checkpoint's `preprocessing`).
const PREPARATION = {
  mnist: "It is prepared as MNIST's digits were: fitted into 20×20 pixels and centred by its mass in 28×28.",
  emnist: "It is prepared as EMNIST's characters were: its longer side fitted to 26 pixels, centred in 28×28.",
  "fashion-mnist":
    "It is prepared as Fashion-MNIST's photos were: its longer side fitted to 28 pixels, centred, shades kept.",
  none:
    "mnistkit does not know how this model's dataset made its images: the pad is sent as they are, 28×28, light on black, and a picture dropped must be 28×28 already.",
};
let hasInk = false;
let inked = null; // the box the strokes span: {left, top, right, bottom}, in the pad's pixels
let showingUpload = false;
let strokePointer = null;
let lastPoint = null;
let timer = null;
let firstChangeAt = null;
let latestRequest = 0;
let clears = 0; // a drawing still being encoded when the pad is cleared (or an upload comes) is gone
let drawingInFlight = false; // one drawing at a time on its way: a slow server gets no pile of them
let drawingWanted = false; // the pad changed meanwhile: sent when the answer is in

function percent(probability) {
  const value = probability * 100;
  return (value >= 99.95 || value < 0.05 ? value.toFixed(0) : value.toFixed(1)) + "%";
}

function buildBars() {
  bars.replaceChildren(
    ...classes.map((digit, index) => {
      const row = document.createElement("li");
      row.dataset.digit = digit;
      row.innerHTML =
        '<span class="label"></span><span class="track"><span class="fill"></span></span><span class="value">–</span>';
      row.querySelector(".label").textContent = names[index];
      return row;
    }),
  );
}

function setClasses(newClasses, newNames) {
  if (newClasses.join() === classes.join() && newNames.join() === names.join()) return;
  classes = newClasses;
  names = newNames;
  // Room for the longest name ("Ankle boot") in the bars' label column; a digit's is 1.2em.
  const longest = Math.max(...names.map((name) => name.length));
  bars.style.setProperty("--label-width", `${Math.max(1.2, 0.62 * longest + 0.4).toFixed(2)}em`);
  bars.classList.toggle("named", names.some((name, index) => name !== String(classes[index])));
  buildBars();
}

function resetReading(message) {
  latestRequest += 1; // answers still on their way are for a picture that is gone
  answer.classList.add("empty");
  digitOutput.textContent = "?";
  confidenceText.textContent = message;
  for (const row of bars.children) {
    row.classList.remove("top");
    row.querySelector(".fill").style.width = "0";
    row.querySelector(".value").textContent = "–";
  }
  seen.hidden = true;
  seenEmpty.hidden = false;
  glance.textContent = "";
  glance.classList.remove("error");
  showStatus("");
}

function showStatus(message, isError = false) {
  statusLine.textContent = message;
  statusLine.classList.toggle("error", isError);
}

// The answer shown was for a picture before this one, so it goes; and the glance says what went
// wrong, since on a phone the status line lies below the pad, out of sight (with the server
// gone, the page kept the last answer there and said nothing else).
function showProblem(reading, message) {
  resetReading(reading);
  showStatus(message, true);
  glance.textContent = reading;
  glance.classList.add("error");
}

function showReading(reading) {
  setClasses(reading.classes, reading.class_names);
  answer.classList.remove("empty");
  digitOutput.textContent = reading.label;
  digitOutput.classList.toggle("word", reading.label.length > 2);
  confidenceText.textContent = percent(reading.confidence) + " sure";
  glance.textContent = `${reading.label} · ${percent(reading.confidence)}`;
  glance.classList.remove("error");
  reading.classes.forEach((digit, index) => {
    const row = bars.children[index];
    const probability = reading.probabilities[index];
    row.classList.toggle("top", digit === reading.digit);
    row.querySelector(".fill").style.width = (probability * 100).toFixed(2) + "%";
    row.querySelector(".value").textContent = percent(probability);
  });
  seen.src = "data:image/png;base64," + reading.preprocessed_png;
  seen.hidden = false;
  seenEmpty.hidden = true;
  showStatus("");
}

async function predict(body, name) {
  const request = ++latestRequest;
  let response;
  let reply;
  try {
    response = await fetch("/api/predict?name=" + encodeURIComponent(name), {
      method: "POST",
      body,
      headers: { "Content-Type": body.type || "application/octet-stream" },
      signal: AbortSignal.timeout(ANSWER_WAIT_MS), // a phone off its Wi-Fi waits minutes for TCP
    });
    reply = await response.json();
  } catch (error) {
    if (request === latestRequest) {
      showProblem("No answer", "No answer from the server: is mnistkit serve still running?");
    }
    return;
  }
  if (request !== latestRequest) return;
  if (response.ok) {
    showReading(reply);
  } else if (response.status === 422 && name === "drawing") {
    // A first stroke can be too little to read (a dot, a short line): not an error yet.
    resetReading("Keep drawing");
    showStatus("");
  } else {
    showProblem("Could not read it", reply.error || response.statusText);
  }
}

function clearPad() {
  context.fillStyle = PAPER;
  context.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
  inked = null;
  showingUpload = false;
  hint.hidden = false;
  clearTimeout(timer);
  timer = null;
  firstChangeAt = null;
  drawingWanted = false;
  clears += 1;
  resetReading("Draw to see");
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function spanned(point) {
  inked = inked
    ? {
        left: Math.min(inked.left, point.x),
        top: Math.min(inked.top, point.y),
        right: Math.max(inked.right, point.x),
        bottom: Math.max(inked.bottom, point.y),
      }
    : { left: point.x, top: point.y, right: point.x, bottom: point.y };
}

function strokeTo(point) {
  spanned(point);
  context.beginPath();
  context.moveTo(lastPoint.x, lastPoint.y);
  context.lineTo(point.x, point.y);
  context.stroke();
  lastPoint = point;
}

function drawingChanged() {
  hasInk = true;
  hint.hidden = true;
  const now = performance.now();
  if (firstChangeAt === null) firstChangeAt = now;
  clearTimeout(timer);
  timer = setTimeout(predictDrawing, Math.max(0, Math.min(DEBOUNCE_MS, firstChangeAt + MAX_WAIT_MS - now)));
}

// Dark strokes on white paper made light strokes on black, in place.
function invert(sentContext, side) {
  const pixels = sentContext.getImageData(0, 0, side, side);
  for (let index = 0; index < pixels.data.length; index += 4) {
    for (let channel = 0; channel < 3; channel += 1) {
      pixels.data[index + channel] = 255 - pixels.data[index + channel];
    }
  }
  sentContext.putImageData(pixels, 0, 0);
}

function predictDrawing() {
  timer = null;
  firstChangeAt = null;
  if (!hasInk) return;
  const span = Math.max(inked.right - inked.left, inked.bottom - inked.top);
  if (span < LEAST_SPAN_BRUSHES * brushFraction * pad.width) {
    resetReading("Keep drawing");
    return;
  }
  if (drawingInFlight) {
    drawingWanted = true;
    return;
  }
  drawingInFlight = true;
  const drawing = clears; // toBlob answers later
  const side = takenAsIs ? AS_IS_PX : SENT_PX;
  sent.width = sent.height = side;
  const sentContext = sent.getContext("2d");
  sentContext.imageSmoothingQuality = "high";
  sentContext.drawImage(pad, 0, 0, side, side);
  if (takenAsIs) invert(sentContext, side);
  sent.toBlob(async (blob) => {
    try {
      if (drawing === clears) await predict(blob, "drawing");
    } finally {
      // Whatever became of the answer: a drawing left in flight for good stopped every
      // reading after it until the page was loaded again.
      drawingInFlight = false;
      if (drawingWanted) {
        drawingWanted = false;
        predictDrawing();
      }
    }
  }, "image/png");
}

pad.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  // One stroke at a time: a second finger, or a hand resting by the pen, took the stroke over,
  // left a dot, and what the first went on drawing was lost.
  if (strokePointer !== null && event.pointerId !== strokePointer) return;
  if (showingUpload) clearPad();
  pad.setPointerCapture(event.pointerId);
  strokePointer = event.pointerId;
  context.strokeStyle = INK;
  context.lineWidth = pad.width * brushFraction;
  context.lineCap = "round";
  context.lineJoin = "round";
  lastPoint = padPoint(event);
  spanned(lastPoint);
  context.fillStyle = INK; // a dot where the stroke starts
  context.beginPath();
  context.arc(lastPoint.x, lastPoint.y, context.lineWidth / 2, 0, 2 * Math.PI);
  context.fill();
  drawingChanged();
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== strokePointer) return;
  const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const move of moves.length ? moves : [event]) strokeTo(padPoint(move));
  drawingChanged();
});

// lostpointercapture too: a stroke whose end never came would keep every other pointer out.
for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
  pad.addEventListener(type, (event) => {
    if (event.pointerId === strokePointer) strokePointer = null;
  });
}

async function showImage(file) {
  context.fillStyle = PAPER;
  context.fillRect(0, 0, pad.width, pad.height);
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const width = bitmap.width * scale;
    const height = bitmap.height * scale;
    context.drawImage(bitmap, (pad.width - width) / 2, (pad.height - height) / 2, width, height);
    bitmap.close();
  } catch {
    // A format the browser cannot show (TIFF, say) may still be one mnistkit reads.
  }
}

function readFile(file) {
  clearPad();
  showingUpload = true;
  hint.hidden = true;
  showImage(file);
  predict(file, file.name);
}

document.getElementById("clear").addEventListener("click", clearPad);
document.getElementById("upload").addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => {
  if (fileInput.files.length) readFile(fileInput.files[0]);
  fileInput.value = "";
});

// Dropping a file anywhere reads it, instead of the browser leaving the page to open it.
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) dropZone.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (file) readFile(file);
});

async function showModel() {
  const model = document.getElementById("model");
  try {
    const response = await fetch("/api/model");
    const info = await response.json();
    const metadata = info.metadata;
    const parts = [info.description];
    const accuracy = metadata.metrics && metadata.metrics.test_accuracy;
    if (typeof accuracy === "number") parts.push(`${(accuracy * 100).toFixed(2)}% test accuracy`);
    if (metadata.dataset !== "mnist") parts.push(metadata.dataset);
    if (!info.all_classes) parts.push(`${metadata.class_names.join(", ")} only`);
    const name = document.createElement("strong");
    name.textContent = info.name;
    model.replaceChildren(name, " · " + parts.join(" · "));
    takenAsIs = metadata.preprocessing === "none";
    brushFraction = takenAsIs ? AS_IS_BRUSH_FRACTION : BRUSH_FRACTION;
    const preparation = PREPARATION[metadata.preprocessing];
    if (preparation) document.getElementById("preparation").textContent = preparation;
    if (!info.digits) {
      document.title = "Draw a picture · mnistkit";
      document.querySelector("h1").textContent = "Draw or drop a picture";
      document.getElementById("drawing-title").textContent = "Your picture";
      document.getElementById("hint").firstChild.textContent = "Draw here";
      pad.setAttribute("aria-label", "Drawing area: draw with a mouse, a finger or a pen");
      document.getElementById("bars").setAttribute("aria-label", "Probability of each class");
      document.getElementById("curl").textContent =
        `curl --data-binary @picture.png ${location.origin}/api/predict`;
    }
    setClasses(metadata.classes, metadata.class_names);
  } catch {
    model.textContent = "The model's description did not load.";
  }
}

document.getElementById("curl").textContent =
  `curl --data-binary @digit.png ${location.origin}/api/predict`;
buildBars();
clearPad();
showModel();
