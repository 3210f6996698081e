// The playground: try a served model on a photo, the camera or, for a tracker, a video. Plain browser JavaScript
// with no dependencies, served from the deployment's own origin: every call below goes to that origin with the key
// the user typed.
"use strict";

const KEY_STORAGE = "humanserve-key";
// A video is tracked frame by frame in the browser: at most this many frames (30 s at 10 per second), each sent
// as a JPEG no larger than this on its long side, kept as such for the playback.
const MAX_FRAMES = 300;
const MAX_FRAME_SIDE = 1280;
const $ = (id) => document.getElementById(id);
const state = {
  models: new Map(), // name -> its v2 metadata (description, weights, options)
  model: null,
  parameters: {},
  file: null,
  video: null,
  sourceUrl: null,
  pictureUrl: null,
  points: [],
  regions: [],
  frames: [],
  camera: null,
};

function key() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function authorized(init = {}) {
  return { ...init, headers: { ...(init.headers || {}), Authorization: `Bearer ${key()}` } };
}

// TorchServe's and the proxy's errors are JSON {code, type, message}, the v2 routes' {error}; anything else is shown
// as it came.
async function errorText(response) {
  const body = await response.text();
  try {
    const error = JSON.parse(body);
    if (error.message || error.error) {
      return `${response.status} ${error.type || response.statusText}: ${error.message || error.error}`;
    }
  } catch (notJson) {
    // fall through
  }
  return `${response.status} ${response.statusText}: ${body.slice(0, 500)}`;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

// A model with an `end` option takes a video as one sequence of frames (pose_tracker).
function isSequenceModel() {
  return "end" in state.parameters;
}

// --- the models -----------------------------------------------------------------------------------------------------

async function listModels() {
  const status = $("models-status");
  $("models").replaceChildren();
  state.models.clear();
  if (!key()) {
    status.textContent = "Enter the key to list the models.";
    return;
  }
  status.textContent = "Listing the models...";
  let response;
  try {
    response = await fetch("/v2/repository/index", authorized({ method: "POST" }));
  } catch (unreachable) {
    status.textContent = `The server did not answer: ${unreachable.message}`;
    return;
  }
  if (!response.ok) {
    status.textContent = await errorText(response);
    return;
  }
  const models = await response.json();
  status.textContent = `${models.length} model${models.length === 1 ? "" : "s"}`;
  $("models").replaceChildren(...(await Promise.all(models.map(modelItem))));
}

// One model of the list: its name, what it does and whether its weights are real, from its v2 metadata.
async function modelItem(model) {
  const item = document.createElement("li");
  item.dataset.model = model.name;
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.model = model.name;
  const title = document.createElement("strong");
  title.textContent = `${model.name} ${model.version}`;
  const about = document.createElement("small");
  button.append(title, about);
  item.append(button);
  if (model.state !== "READY") {
    button.classList.add("unavailable");
    button.disabled = true;
    about.textContent = `unavailable: ${model.reason || model.state}`;
    return item;
  }
  const response = await fetch(`/v2/models/${encodeURIComponent(model.name)}`, authorized());
  if (!response.ok) {
    about.textContent = await errorText(response);
    return item;
  }
  const metadata = await response.json();
  state.models.set(model.name, metadata);
  about.textContent = metadata.description || "";
  if (randomParts(metadata).length) {
    const badge = document.createElement("span");
    badge.className = "random";
    badge.textContent = "untrained weights";
    button.append(badge);
  }
  button.addEventListener("click", () => selectModel(model.name));
  return item;
}

// The parts of a model whose weights are not trained ones: random where no published weights were reachable when it
// was exported (its record says why).
function randomParts(metadata) {
  return Object.entries(metadata.weights || {}).filter(([, record]) => !record.pretrained);
}

function selectModel(name) {
  showError("");
  const metadata = state.models.get(name);
  state.model = name;
  state.parameters = metadata.parameters || {};
  $("model-title").textContent = name;
  $("model-description").textContent = metadata.description || "";
  const random = randomParts(metadata);
  $("model-weights").textContent = random.length
    ? `Untrained weights for ${random
        .map(([part, record]) => `${part} (${[record.source, record.reason].filter(Boolean).join(": ")})`)
        .join(", ")}: its answers are well-formed but meaningless.`
    : `Weights: ${Object.entries(metadata.weights || {})
        .map(([part, record]) => `${part} from ${record.source}${record.file ? ` ${record.file}` : ""}`)
        .join(", ")}`;
  $("model-weights").classList.toggle("random", random.length > 0);
  $("try").hidden = false;
  buildOptions(state.parameters);
  const sequence = isSequenceModel();
  $("file").accept = sequence ? "image/*,video/*" : "image/*";
  $("fps-field").hidden = !sequence;
  $("drop-hint").textContent = sequence
    ? "Drop a video (tracked frame by frame as one sequence) or a photo here, paste one, choose a file or use the camera."
    : "Drop a photo here, paste one, choose a file or use the camera.";
  updateSend();
}

// Each option as the metadata states it: a checkbox for a flag, a list for a choice, a number field within its
// range, else a text field showing its default. `end` is the page's to set, on a video's last frame.
function buildOptions(parameters) {
  const fieldset = $("options");
  fieldset.replaceChildren(Object.assign(document.createElement("legend"), { textContent: "Options" }));
  for (const [name, option] of Object.entries(parameters)) {
    if (name === "end" && isSequenceModel()) {
      continue;
    }
    const label = document.createElement("label");
    const input = optionInput(name, option);
    input.name = name;
    input.title = option.help || "";
    const help = document.createElement("small");
    help.textContent = option.help || "";
    label.append(name, input, help);
    fieldset.append(label);
  }
}

function optionInput(name, option) {
  const shownDefault = option.default === null || option.default === undefined ? "" : String(option.default);
  if (option.type === "boolean") {
    const input = Object.assign(document.createElement("input"), { type: "checkbox", checked: option.default });
    input.dataset.default = String(option.default);
    return input;
  }
  if (option.enum) {
    const select = document.createElement("select");
    select.append(new Option(shownDefault ? `${shownDefault} (default)` : "(default)", ""));
    for (const value of option.enum) {
      if (value !== option.default) {
        select.append(new Option(value, value));
      }
    }
    return select;
  }
  const input = document.createElement("input");
  input.placeholder = shownDefault;
  if (option.type === "number" || option.type === "integer") {
    Object.assign(input, { type: "number", min: option.minimum, max: option.maximum });
    input.step = option.type === "integer" ? "1" : "any";
  } else {
    input.type = "text";
  }
  return input;
}

// Only what the user changed travels: the server's defaults stay the server's.
function chosenOptions() {
  const chosen = [];
  for (const input of $("options").querySelectorAll("input, select")) {
    if (input.type === "checkbox") {
      if (String(input.checked) !== input.dataset.default) {
        chosen.push([input.name, String(input.checked)]);
      }
    } else if (input.value.trim() !== "") {
      chosen.push([input.name, input.value.trim()]);
    }
  }
  return chosen;
}

// --- the photo, the camera, the video -------------------------------------------------------------------------------

function takeFile(file) {
  if (!file) {
    return;
  }
  if (state.sourceUrl) {
    URL.revokeObjectURL(state.sourceUrl);
  }
  state.sourceUrl = URL.createObjectURL(file);
  const video = file.type.startsWith("video/") && isSequenceModel();
  const photo = file.type.startsWith("image/");
  state.file = video ? null : file; // anything else is sent as it is, for the server to say what it is not
  state.video = video ? file : null;
  $("photo").hidden = !photo;
  $("source-video").hidden = !video;
  if (photo || video) {
    (video ? $("source-video") : $("photo")).src = state.sourceUrl;
  }
  const kind = video ? "Video" : photo ? "Photo" : "File";
  $("photo-caption").textContent = `${kind} (${file.name || file.type}, ${file.size} bytes)`;
  updateSend();
}

function updateSend() {
  $("send").disabled = !(state.model && (state.file || state.video));
}

async function openCamera() {
  showError("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("The browser offers the camera only to secure pages: open the playground over https or on localhost.");
    return;
  }
  try {
    state.camera = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (refused) {
    showError(`No camera: ${refused.message}`);
    return;
  }
  $("camera").srcObject = state.camera;
  $("camera-view").hidden = false;
  $("camera-take").disabled = true;
  await $("camera").play();
  $("camera-take").disabled = false; // a frame to take
}

function closeCamera() {
  for (const track of state.camera ? state.camera.getTracks() : []) {
    track.stop();
  }
  state.camera = null;
  $("camera").srcObject = null;
  $("camera-view").hidden = true;
}

async function takeCameraPhoto() {
  const camera = $("camera");
  const canvas = Object.assign(document.createElement("canvas"), {
    width: camera.videoWidth,
    height: camera.videoHeight,
  });
  canvas.getContext("2d").drawImage(camera, 0, 0);
  const blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.92));
  closeCamera();
  takeFile(new File([blob], "camera.jpg", { type: "image/jpeg" }));
}

// --- the request and its answer -------------------------------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  showError("");
  $("decision").textContent = "";
  $("hover").textContent = "";
  $("tracks").replaceChildren();
  $("video-controls").hidden = true;
  $("picture").hidden = true; // no answer shown but this request's
  $("drawn").hidden = true;
  $("answer-caption").textContent = "Answer";
  $("json").textContent = "";
  if (state.video) {
    await trackVideo(state.video);
    return;
  }
  // A photo to a tracker is a one-frame sequence, ended with its answer: nothing is left open on the server.
  const options = [...chosenOptions(), ...(isSequenceModel() ? [["end", "true"]] : [])];
  $("curl").textContent = curlCommand(state.model, state.file.name || "photo.jpg", options);
  $("send").disabled = true;
  const started = performance.now();
  let response;
  try {
    response = await predict(state.file, options);
  } catch (unreachable) {
    showError(`The server did not answer: ${unreachable.message}`);
    updateSend();
    return;
  }
  updateSend();
  const took = Math.round(performance.now() - started);
  if (!response.ok) {
    $("timing").textContent = `${response.status} after ${took} ms${serverTimes(response)}`;
    showError(await errorText(response));
    return;
  }
  const type = (response.headers.get("Content-Type") || "").split(";")[0];
  if (type.startsWith("image/")) {
    const picture = await response.blob();
    $("timing").textContent = `answered in ${took} ms: ${type}, ${picture.size} bytes${serverTimes(response)}`;
    $("decision").textContent = filterDecision(response.headers);
    showPicture(picture);
    return;
  }
  const answer = await response.json();
  $("timing").textContent = `answered in ${took} ms${serverTimes(response)}`;
  $("json").textContent = JSON.stringify(answer, null, 1);
  await $("photo").decode();
  showDrawn($("photo"), answer);
}

// A photo and the options as multipart form fields; headers for a sequence's frames.
function predict(photo, options, headers = {}) {
  const form = new FormData();
  form.append("data", photo, photo.name || "photo");
  for (const [name, value] of options) {
    form.append(name, value);
  }
  return fetch(`/predictions/${encodeURIComponent(state.model)}`, authorized({ method: "POST", body: form, headers }));
}

// The server's own account of the request: its batch's stage times (Server-Timing) and how many requests shared them.
function serverTimes(response) {
  const timing = response.headers.get("Server-Timing");
  if (!timing) {
    return "";
  }
  const stages = timing.split(",").map((entry) => {
    const [name, duration] = entry.trim().split(";dur=");
    return `${name} ${Number(duration).toFixed(1)}`;
  });
  const batch = response.headers.get("X-Batch-Size");
  return `; server, in ms: ${stages.join(", ")}${batch ? ` (a batch of ${batch})` : ""}`;
}

// The smart filter's choice, which it gives beside its picture.
function filterDecision(headers) {
  const background = headers.get("X-Filter-Background");
  if (!background) {
    return "";
  }
  const expression = headers.get("X-Filter-Expression");
  if (!expression) {
    return `Background ${background}: no face found.`;
  }
  const smiling = headers.get("X-Filter-Smiling") === "true" ? ", smiling" : "";
  return `Background ${background}: the largest face looks ${expression}${smiling}.`;
}

function curlCommand(model, filename, options, headers = {}) {
  const quoted = (text) => `'${text.replace(/'/g, "'\\''")}'`;
  const fields = options.map(([name, value]) => ` -F ${quoted(`${name}=${value}`)}`).join("");
  const extra = Object.entries(headers)
    .map(([name, value]) => ` -H ${quoted(`${name}: ${value}`)}`)
    .join("");
  return (
    `curl -s ${location.origin}/predictions/${model} -H "Authorization: Bearer $KEY"${extra}` +
    ` -F 'data=@${filename}'${fields}`
  );
}

function showPicture(blob) {
  if (state.pictureUrl) {
    URL.revokeObjectURL(state.pictureUrl);
  }
  state.pictureUrl = URL.createObjectURL(blob);
  $("picture").src = state.pictureUrl;
  $("picture").hidden = false;
  $("drawn").hidden = true;
  $("json").textContent = "";
  $("answer-caption").textContent = `Answer (${blob.type})`;
}

function showDrawn(image, answer) {
  drawAnswer($("drawn"), image, answer);
  $("drawn").hidden = false;
  $("picture").hidden = true;
  $("answer-caption").textContent = "Answer, drawn";
}

// --- a video, tracked -----------------------------------------------------------------------------------------------

// The video's frames at the chosen rate, each sent in order as a frame of one sequence (the last one ending it),
// then played back with the tracks drawn.
async function trackVideo(file) {
  const fps = framesPerSecond();
  const video = $("source-video");
  if (video.readyState < HTMLMediaElement.HAVE_METADATA) {
    await new Promise((loaded, failed) => {
      video.addEventListener("loadedmetadata", loaded, { once: true });
      video.addEventListener("error", () => failed(new Error("the browser cannot play this video")), { once: true });
    }).catch((error) => showError(error.message));
  }
  if (video.duration === Infinity) {
    await seek(video, 1e9); // a recorded WebM tells its duration only once the browser has read to its end
  }
  if (!video.duration) {
    return;
  }
  const count = Math.min(MAX_FRAMES, Math.max(1, Math.floor(video.duration * fps)));
  const sequence = `playground-${randomHex(8)}`;
  const options = chosenOptions();
  $("curl").textContent = curlCommand(state.model, "frame0.jpg", options, { "X-Sequence-Id": sequence });
  $("video-controls").hidden = false;
  $("play").disabled = true;
  $("send").disabled = true;
  const progress = $("progress");
  progress.max = count;
  state.frames = [];
  const started = performance.now();
  for (let index = 0; index < count; index++) {
    const frame = await videoFrame(video, (index + 0.5) / fps);
    const headers = { "X-Sequence-Id": sequence, "X-Option-End": String(index === count - 1) };
    let response;
    try {
      response = await predict(new File([frame], `frame${index}.jpg`, { type: "image/jpeg" }), options, headers);
    } catch (unreachable) {
      showError(`The server did not answer frame ${index + 1}: ${unreachable.message}`);
      break; // the sequence idles out on the server
    }
    const answer = response.ok ? await response.json() : { error: await errorText(response) };
    if (!response.ok) {
      showError(`frame ${index + 1}: ${answer.error}`);
    }
    state.frames.push({ frame, answer });
    progress.value = index + 1;
    $("progress-text").textContent = `frame ${index + 1} of ${count} tracked`;
    $("timing").textContent =
      `${index + 1} frames in ${Math.round(performance.now() - started)} ms; last frame${serverTimes(response)}`;
    await showFrame(index);
  }
  $("json").textContent = JSON.stringify(
    state.frames.map(({ answer }) => answer),
    null,
    1,
  );
  listTracks();
  $("play").disabled = false;
  updateSend();
}

// The frame of ``video`` shown at ``time`` seconds, as a JPEG no larger than MAX_FRAME_SIDE.
async function videoFrame(video, time) {
  await seek(video, time);
  const scale = Math.min(1, MAX_FRAME_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const canvas = Object.assign(document.createElement("canvas"), {
    width: Math.round(video.videoWidth * scale),
    height: Math.round(video.videoHeight * scale),
  });
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.92));
}

// The rate chosen for sending and playing a video back, within 1-30.
function framesPerSecond() {
  return Math.min(30, Math.max(1, Number($("fps").value) || 10));
}

function seek(video, time) {
  return new Promise((seeked) => {
    video.addEventListener("seeked", seeked, { once: true });
    video.currentTime = time;
  });
}

async function showFrame(index) {
  const { frame, answer } = state.frames[index];
  const bitmap = await createImageBitmap(frame);
  showDrawn(bitmap, answer.error ? {} : answer);
  bitmap.close();
  $("answer-caption").textContent = `Frame ${index + 1} of ${state.frames.length}, tracked`;
}

async function playBack() {
  const fps = framesPerSecond();
  $("play").disabled = true;
  for (let index = 0; index < state.frames.length; index++) {
    const shown = new Promise((next) => setTimeout(next, 1000 / fps));
    await showFrame(index);
    $("progress").value = index + 1;
    $("progress-text").textContent = `playing frame ${index + 1} of ${state.frames.length}`;
    await shown;
  }
  $("play").disabled = false;
}

// Each track ID and the frames it was seen in.
function listTracks() {
  const seen = new Map();
  state.frames.forEach(({ answer }, index) => {
    for (const person of answer.people || []) {
      if (person.track_id !== null && person.track_id !== undefined) {
        seen.set(person.track_id, [...(seen.get(person.track_id) || []), index + 1]);
      }
    }
  });
  $("tracks").replaceChildren(
    ...[...seen.entries()].map(([id, frames]) => {
      const item = document.createElement("li");
      item.dataset.track = id;
      item.textContent = `track ${id}: ${frames.length} frames, ${frames[0]} to ${frames[frames.length - 1]}`;
      item.style.borderColor = colour(id);
      return item;
    }),
  );
}

function randomHex(bytes) {
  return [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// --- drawing --------------------------------------------------------------------------------------------------------

const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"];

function colour(index) {
  return COLOURS[((index % COLOURS.length) + COLOURS.length) % COLOURS.length];
}

// The JSON answer drawn over ``image``: people (boxes, keypoints, skeleton, masks; a tracked person in the colour
// of their track), faces and their expressions, a segmenter's mask. What the pointer can name is kept for hover.
function drawAnswer(canvas, image, answer) {
  canvas.width = image.naturalWidth || image.width;
  canvas.height = image.naturalHeight || image.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const line = Math.max(2, Math.round(canvas.width / 300));
  context.lineWidth = line;
  state.points = [];
  state.regions = [];
  (answer.people || []).forEach((person, index) => {
    const tracked = person.track_id !== null && person.track_id !== undefined;
    const hue = colour(tracked ? person.track_id : index);
    const name = tracked ? `track ${person.track_id}` : `person ${index + 1}`;
    if (person.mask) {
      drawMask(context, person.mask);
    }
    const words = [tracked ? `#${person.track_id}` : `${index + 1}`, Number(person.score ?? 0).toFixed(2), person.view];
    drawBox(context, person.box, hue, words.filter(Boolean).join(" "));
    const keypoints = person.keypoints || [];
    context.strokeStyle = hue;
    for (const [from, to] of answer.skeleton || []) {
      if (keypoints[from] && keypoints[to]) {
        context.beginPath();
        context.moveTo(keypoints[from][0], keypoints[from][1]);
        context.lineTo(keypoints[to][0], keypoints[to][1]);
        context.stroke();
      }
    }
    keypoints.forEach(([x, y, score], joint) => {
      context.fillStyle = hue;
      context.beginPath();
      context.arc(x, y, line * 2, 0, 2 * Math.PI);
      context.fill();
      const part = (answer.keypoint_names || [])[joint] || `keypoint ${joint}`;
      state.points.push({ x, y, text: `${name}, ${part}: score ${score.toFixed(3)}` });
    });
  });
  (answer.faces || []).forEach((face, index) => {
    const hue = colour(index);
    const expression = face.expression ? face.expression.label : "";
    const words = [expression, face.smiling ? "smiling" : ""].filter(Boolean).join(", ");
    drawBox(context, face.box, hue, words || `face ${index + 1}`);
    for (const [x, y] of face.landmarks || []) {
      context.fillStyle = hue;
      context.fillRect(x - line, y - line, 2 * line, 2 * line);
    }
    const scores = Object.entries(face.expression ? face.expression.scores : {})
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([label, score]) => `${label} ${score.toFixed(2)}`);
    state.regions.push({ box: face.box, text: `face ${index + 1} (score ${face.score.toFixed(3)}): ${scores.join(", ")}` });
  });
  if (answer.mask) {
    drawMask(context, answer.mask);
  }
}

function drawBox(context, box, hue, label) {
  if (!box) {
    return;
  }
  const [x1, y1, x2, y2] = box;
  context.strokeStyle = hue;
  context.strokeRect(x1, y1, x2 - x1, y2 - y1);
  context.font = `${Math.max(12, Math.round(context.canvas.width / 60))}px sans-serif`;
  context.fillStyle = hue;
  context.fillText(label, x1 + 2, Math.max(12, y1 - 4));
}

// COCO's compressed RLE (pycocotools' string form): run lengths, column-major, starting with a run of zeros.
function decodeRle(counts) {
  const runs = [];
  for (let position = 0; position < counts.length; ) {
    let value = 0;
    let shift = 0;
    let more = true;
    while (more) {
      const code = counts.charCodeAt(position++) - 48;
      value |= (code & 0x1f) << shift;
      more = (code & 0x20) !== 0;
      shift += 5;
      if (!more && code & 0x10) {
        value |= -1 << shift;
      }
    }
    if (runs.length > 2) {
      value += runs[runs.length - 2];
    }
    runs.push(value);
  }
  return runs;
}

function drawMask(context, mask) {
  const [height, width] = mask.size;
  const overlay = context.getImageData(0, 0, width, height);
  let index = 0;
  decodeRle(mask.counts).forEach((run, order) => {
    if (order % 2 === 1) {
      for (let end = index + run; index < end; index++) {
        const pixel = 4 * ((index % height) * width + Math.floor(index / height));
        overlay.data[pixel] = (overlay.data[pixel] + 255) >> 1; // half-way to red: the mask
        overlay.data[pixel + 1] >>= 1;
        overlay.data[pixel + 2] >>= 1;
      }
    } else {
      index += run;
    }
  });
  context.putImageData(overlay, 0, 0);
}

// A keypoint's name and score under the pointer, else the face around it.
function hover(event) {
  const canvas = $("drawn");
  const bounds = canvas.getBoundingClientRect();
  const x = ((event.clientX - bounds.left) * canvas.width) / bounds.width;
  const y = ((event.clientY - bounds.top) * canvas.height) / bounds.height;
  const reach = (12 * canvas.width) / bounds.width;
  const near = state.points.find((point) => Math.hypot(point.x - x, point.y - y) <= reach);
  const around = state.regions.find(({ box }) => box[0] <= x && x <= box[2] && box[1] <= y && y <= box[3]);
  $("hover").textContent = near ? near.text : around ? around.text : "";
}

// --- wiring ---------------------------------------------------------------------------------------------------------

// The photo, the video and the picture answered: made here, as markup may not hold an image without its source.
function addMedia() {
  for (const [frame, tag, id, label] of [
    ["photo-frame", "img", "photo", "the photo sent"],
    ["photo-frame", "video", "source-video", "the video sent"],
    ["picture-frame", "img", "picture", "the picture answered"],
  ]) {
    const media = document.createElement(tag);
    media.id = id;
    if (tag === "img") {
      media.alt = label;
    } else {
      Object.assign(media, { muted: true, controls: true, playsInline: true, preload: "auto" });
      media.setAttribute("aria-label", label);
    }
    media.hidden = true;
    $(frame).append(media);
  }
}

function start() {
  addMedia();
  $("key").value = "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("key").value);
    $("key").value = "";
    listModels();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    listModels();
  });
  $("file").addEventListener("change", () => takeFile($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    takeFile(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((item) => item.type.startsWith("image/"));
    if (file) {
      takeFile(file);
    }
  });
  $("camera-open").addEventListener("click", openCamera);
  $("camera-take").addEventListener("click", takeCameraPhoto);
  $("camera-close").addEventListener("click", closeCamera);
  $("request-form").addEventListener("submit", send);
  $("play").addEventListener("click", playBack);
  $("drawn").addEventListener("mousemove", hover);
  listModels();
}

start();
